"""The main job's glue: a data source -> cached latents, and a trained tokenizer -> image metrics.

Two data sources, one interface:
- ``data=None``: the embedded photo crops (64 x 64) and the embedded VAE, all offline;
- ``data="<imagenet root>"``: ``root/train`` and ``root/val`` in ImageNet layout (``root/<split>/<class>/<img>``),
  centre-cropped to 256 x 256 and encoded once with the given VAE into ``cache_dir()`` (reused next time).

    data = prepare_data(vae_name=None, data=None)           # DataSplits(train_latents, val_latents, eval_images)
    results, notes = evaluate_tokenizer(model, vae, data.eval_images)
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import torch

from .data import ImageFolderDataset, build_photo_dataset, cache_dir
from .latents import embedded_latents, encode_image_folder
from .metrics import MissingDependencyError, MissingWeightsError, ReconstructionMetrics
from .vae import decode, encode, load_vae


class DataSplits(NamedTuple):
    train_latents: torch.Tensor  # (N, C, h, w) float32, the VAE's raw (unnormalized) latents
    val_latents: torch.Tensor  # (M, C, h, w)
    eval_images: torch.Tensor  # (E, 3, H, W) in [-1, 1]: held-out images for pixel metrics and the figure


def prepare_data(vae=None, data: str | Path | None = None, num_eval_images: int = 256,
                 image_size: int = 256, progress: bool = True) -> DataSplits:
    """Latents for training and validation, and held-out images to evaluate on.

    Args:
        vae: the frozen VAE (an ``AutoencoderDC``); used only to encode an image folder.
        data: None for the embedded photo crops; else an ImageNet-layout root with ``train/`` and ``val/``.
        num_eval_images: how many held-out images ``eval_images`` holds (the first ones, in a fixed order).
        image_size: centre-crop side for an image folder (the paper: 256).
    """
    if data is None:
        train_latents, val_latents = embedded_latents(["train", "val"], progress=progress)
        eval_images = build_photo_dataset("test", progress=progress)[:num_eval_images]
        return DataSplits(train_latents, val_latents, eval_images)
    root = Path(data).expanduser()
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"{root / split} does not exist: data= must be an ImageNet-layout root holding "
                                    f"train/<class>/<image> and val/<class>/<image> (or None for the embedded photos).")
    if vae is None:
        raise ValueError("an image folder needs the VAE that encodes it: pass vae=load_vae(<hub id or directory>).")
    vae_key = hashlib.sha1(repr(sorted(dict(vae.config).items())).encode()).hexdigest()[:10]
    latents = {}
    for split in ("train", "val"):
        cache_path = cache_dir() / f"latents_{root.name}_{split}_{image_size}_vae{vae_key}.safetensors"
        latents[split] = encode_image_folder(vae, root / split, image_size, cache_path=cache_path, progress=progress)
    val_images = ImageFolderDataset(root / "val", size=image_size)
    count = min(num_eval_images, len(val_images))
    eval_images = torch.stack([val_images[index][0] for index in range(count)])
    return DataSplits(latents["train"], latents["val"], eval_images)


@torch.no_grad()
def reconstruct_images(model, vae, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(VAE-only, ReVQ) reconstructions of images (N, 3, H, W) in [-1, 1], both (N, 3, H, W) on the CPU."""
    latents = encode(vae, images, batch_size)  # (N, C, h, w)
    revq_latents = torch.cat([model.reconstruct_latent(part.to(model.normalizer.mean.device)).cpu()
                              for part in latents.split(batch_size)])
    return decode(vae, latents, batch_size), decode(vae, revq_latents, batch_size)


def evaluate_tokenizer(model, vae, images: torch.Tensor, batch_size: int = 64, lpips_weights=None,
                       rfid_weights=None) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Pixel metrics of the VAE alone and of ReVQ (VAE + tokens) against the originals.

    Returns ({"vae": metrics, "revq": metrics}, notes). Metrics: psnr_rgb, psnr_y, ssim_rgb, ssim_y, and
    lpips / rfid when their weights and packages are on this machine; otherwise ``notes`` says, in one
    line each, what is missing and where to put it (PSNR and SSIM are always computed).
    """
    vae_images, revq_images = reconstruct_images(model, vae, images, batch_size)
    use_lpips, use_rfid, notes = _available_perceptual_metrics(lpips_weights, rfid_weights)
    results = {}
    for name, reconstructions in (("vae", vae_images), ("revq", revq_images)):
        metrics = ReconstructionMetrics(value_range=(-1.0, 1.0), lpips=use_lpips, rfid=use_rfid,
                                        lpips_weights=lpips_weights, rfid_weights=rfid_weights)
        for start in range(0, len(images), batch_size):
            metrics.update(reconstructions[start:start + batch_size], images[start:start + batch_size])
        results[name] = metrics.compute()
    return results, notes


def _available_perceptual_metrics(lpips_weights, rfid_weights) -> tuple[bool, bool, list[str]]:
    """Which of LPIPS / rFID can run here, and a note for each that cannot."""
    from .metrics import fid_metric, lpips_network

    available, notes = [], []
    for name, build in (("LPIPS", lambda: lpips_network(lpips_weights)), ("rFID", lambda: fid_metric(rfid_weights))):
        try:
            build()
            available.append(True)
        except (MissingWeightsError, MissingDependencyError) as error:
            available.append(False)
            notes.append(f"{name} skipped: {error}")
    return available[0], available[1], notes


def format_results(results: dict[str, dict[str, float]]) -> str:
    """An aligned text table of ``evaluate_tokenizer`` results, numbers rounded for stable printing."""
    columns = [key for key in ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "lpips", "rfid")
               if all(key in scores for scores in results.values())]
    lines = [f"{'':6s}" + "".join(f"{column:>10s}" for column in columns)]
    for name, scores in results.items():
        lines.append(f"{name:6s}" + "".join(f"{scores[column]:10.3f}" for column in columns))
    return "\n".join(lines)


def load_vae_for(vae_name: str | None, device: str = "cpu"):
    """``load_vae`` with the notebook's convention: None or "embedded" is the embedded VAE."""
    return load_vae(None if vae_name in (None, "embedded") else vae_name, device=device)
