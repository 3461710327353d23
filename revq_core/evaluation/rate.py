"""Bits per image, first-class: what a tokenizer's codes can carry and what they actually use.

``code_report(model, codes)`` for the codes (N, T) of N evaluated images: ``bits_per_image`` (the quantizer's
sum over positions of log2 of its vocabulary), ``entropy_bits`` (``quantizers.base.code_entropy``: the per-position
empirical entropy of the ids over the N images, summed over positions; at most ``entropy_cap_bits`` = T * log2(N),
so a vocabulary larger than N is measured from below), ``usage`` (``code_usage``: fraction of each position's
vocabulary hit, averaged; at most N / vocabulary) and the quantizer's name. Every evaluation report carries it:
``evaluation.protocol.evaluate_image_folder`` (so ``python -m revq_core.evaluate``'s JSON) under ``"codes"``, and
``pipeline.evaluate_tokenizer``'s ``"revq"`` row.
"""
from __future__ import annotations

import math

import torch

from revq_core.modeling.quantizers.base import code_entropy, code_usage


def code_report(model, codes: torch.Tensor) -> dict:
    """The rate of ``model``'s codes (N, T) int: bits it can carry, bits it uses, usage (module docstring)."""
    quantizer = model.quantizer
    codes = codes.detach().long().cpu()
    return {"quantizer": model.config.quantizer,
            "bits_per_image": quantizer.bits_per_image,
            "entropy_bits": code_entropy(codes),
            "entropy_cap_bits": codes.shape[1] * math.log2(codes.shape[0]) if codes.shape[0] > 1 else 0.0,
            "usage": code_usage(codes, quantizer.vocabulary_sizes),
            "num_images": int(codes.shape[0])}
