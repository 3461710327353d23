"""revq_core: ReVQ (Quantize-then-Rectify) as a small, tested library."""
__version__ = "0.1.0"
