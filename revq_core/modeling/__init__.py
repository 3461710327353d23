"""The paper's model, one concept per file: config (ModelConfig), normalizer, quantizers/ (the contract, the
paper's multi-group quantizer, its reset), rectifiers, revq (ReVQ)."""
from revq_core.modeling.quantizers import QUANTIZERS, build_quantizer

__all__ = ["QUANTIZERS", "build_quantizer"]
