"""The quantizers, one file each, behind one contract (``base.py``): ``QUANTIZERS[name]`` is the class that
``ModelConfig(quantizer=name)`` builds. A new quantizer is one file here plus one line below
(docs/extending.md)."""
from revq_core.modeling.quantizers.base import EpochStats, LatentQuantizer, QuantizerOutput
from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer

QUANTIZERS: dict[str, type[LatentQuantizer]] = {
    "revq": MultiGroupQuantizer,  # the paper's channel multi-group quantizer (also its spatial / single ablations)
}


def build_quantizer(config) -> LatentQuantizer:
    """The quantizer a ``ModelConfig`` names (``config.quantizer``), built from the config's fields."""
    return QUANTIZERS[config.quantizer].from_config(config)


__all__ = ["QUANTIZERS", "EpochStats", "LatentQuantizer", "MultiGroupQuantizer", "QuantizerOutput", "build_quantizer"]
