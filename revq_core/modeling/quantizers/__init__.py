"""The quantizers, one file each, behind one contract (``base.py``): ``QUANTIZERS[name]`` is the class that
``ModelConfig(quantizer=name)`` builds. A new quantizer is one file here plus one line below
(docs/extending.md)."""
from revq_core.modeling.quantizers.base import EpochStats, LatentQuantizer, QuantizerOutput
from revq_core.modeling.quantizers.fsq import FSQQuantizer, IFSQQuantizer
from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer
from revq_core.modeling.quantizers.rvq import ResidualQuantizer
from revq_core.modeling.quantizers.scalar import ScalarQuantizer
from revq_core.modeling.quantizers.vq import SingleCodebookQuantizer

QUANTIZERS: dict[str, type[LatentQuantizer]] = {
    "revq": MultiGroupQuantizer,  # the paper's channel multi-group quantizer (also its spatial / single ablations)
    "scalar": ScalarQuantizer,  # training-free per-channel quantile bins, L levels per number (TokenBridge)
    "fsq": FSQQuantizer,  # finite scalar quantization's tanh grid (vector-quantize-pytorch FSQ)
    "ifsq": IFSQQuantizer,  # FSQ with the bound 2 Phi(x) - 1: equal-mass levels for N(0, 1) numbers
    "vq": SingleCodebookQuantizer,  # one codebook shared by all tokens, k-means start (classic VQ)
    "rvq": ResidualQuantizer,  # residual VQ: residual_depth single-codebook stages
}


def build_quantizer(config) -> LatentQuantizer:
    """The quantizer a ``ModelConfig`` names (``config.quantizer``), built from the config's fields."""
    return QUANTIZERS[config.quantizer].from_config(config)


__all__ = ["QUANTIZERS", "EpochStats", "FSQQuantizer", "IFSQQuantizer", "LatentQuantizer", "MultiGroupQuantizer",
           "QuantizerOutput", "ResidualQuantizer", "ScalarQuantizer", "SingleCodebookQuantizer", "build_quantizer"]
