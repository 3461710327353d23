"""Reconstruction quality of a VAE on held-out photo crops, beside the bicubic baseline that keeps as many values.

    python -m revq_core.evaluation.vae_quality evaluate      # the embedded VAE on the held-out test photos
"""
from __future__ import annotations

import argparse

import torch

from revq_core.autoencoders.adapters import decode, encode
from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE, EMBEDDED_VAE_CORPUS
from revq_core.autoencoders.loading import load_vae
from revq_core.data.photos import CORPUS_CROPS, DEFAULT_CORPUS, build_photo_dataset
from revq_core.evaluation.protocol import format_scores


def bicubic_baseline(images: torch.Tensor, num_values: int = 2048) -> torch.Tensor:
    """Bicubic resampling with about ``num_values`` numbers per image: the baseline a VAE must beat.

    (N, 3, H, W) in [-1, 1] -> down to (N, 3, s, s) with s = floor(sqrt(num_values / 3)) (antialiased
    bicubic; 26 x 26 x 3 = 2028 <= 2048 for the 32 x 8 x 8 latent), bicubic back up to (H, W), clamped.
    """
    import torch.nn.functional as F

    side = int((num_values / images.shape[1]) ** 0.5)
    small = F.interpolate(images, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(small, size=images.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)


QUALITY_COLUMNS = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")  # reconstruction_quality's keys, in table order


def reconstruction_quality(reference: torch.Tensor, reconstruction: torch.Tensor,
                           chunk_size: int = 64) -> dict[str, float]:
    """Mean per-image PSNR (dB) and SSIM on RGB and on Y (BT.601 luma); images (N, 3, H, W) in [-1, 1].

    Computed ``chunk_size`` images at a time (SSIM's intermediate tensors are large).
    """
    from revq_core.evaluation.metrics import psnr_per_image, ssim_per_image

    per_image: dict[str, list[torch.Tensor]] = {"psnr_rgb": [], "ssim_rgb": [], "psnr_y": [], "ssim_y": []}
    for start in range(0, len(reference), chunk_size):
        target, pred = reference[start:start + chunk_size].float(), reconstruction[start:start + chunk_size].float()
        for channel in ("rgb", "y"):
            per_image[f"psnr_{channel}"].append(psnr_per_image(pred, target, channel, value_range=(-1.0, 1.0)))
            per_image[f"ssim_{channel}"].append(ssim_per_image(pred, target, channel, value_range=(-1.0, 1.0)))
    return {name: float(torch.cat(scores).double().mean()) for name, scores in per_image.items()}


def evaluate_embedded_vae(vae=None, split: str = "test", num_crops: int | None = None, batch_size: int = 16,
                          corpus: str = DEFAULT_CORPUS) -> dict[str, dict[str, float]]:
    """Reconstruction quality of a VAE (default: the embedded VAE v2) and of the bicubic baseline on held-out
    crops of the embedded photos (``corpus`` "v2": 128 x 128 crops of data/photos; "v1": 64 x 64, for the first VAE)."""
    vae = load_vae() if vae is None else vae
    images = build_photo_dataset(split, num_crops, corpus=corpus)
    latents = encode(vae, images, batch_size)
    reconstructions = decode(vae, latents, batch_size)
    return {"vae": reconstruction_quality(images, reconstructions),
            "bicubic": reconstruction_quality(images, bicubic_baseline(images, latents[0].numel()))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m revq_core.evaluation.vae_quality", description="Embedded VAE utilities.")
    sub = parser.add_subparsers(dest="command", required=True)
    evaluate = sub.add_parser("evaluate", help="PSNR/SSIM of a VAE and of bicubic resampling on held-out crops")
    evaluate.add_argument("--vae", default=None, help="directory or hub id (default: the embedded VAE v2; "
                                                      "'embedded': the first one, on its own 64 x 64 crops)")
    evaluate.add_argument("--split", default="test", choices=["val", "test"])
    evaluate.add_argument("--num-crops", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    corpus = EMBEDDED_VAE_CORPUS.get(args.vae or DEFAULT_EMBEDDED_VAE, DEFAULT_CORPUS)  # an embedded VAE's own crops
    results = evaluate_embedded_vae(load_vae(args.vae), args.split, args.num_crops, corpus=corpus)
    side = CORPUS_CROPS[corpus].size
    print(f"{args.split} crops of the held-out photos (corpus {corpus}), {side} x {side}:")
    print(format_scores(results, QUALITY_COLUMNS))


if __name__ == "__main__":
    main()
