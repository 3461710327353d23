"""The main job's glue: a data source -> cached latents, and a trained tokenizer -> image metrics.

Two data sources, one interface:
- ``data=None``: the embedded photo crops (128 x 128) and the embedded VAE v2, all offline;
- ``data="<imagenet root>"``: ``root/train`` and ``root/val`` in ImageNet layout (``root/<split>/<class>/<img>``),
  centre-cropped to 256 x 256 and encoded once with the given VAE into ``cache_dir()`` (reused next time).

    check_run_setup("cpu", "runs/demo")                     # fail at once on a bad device or output_dir
    data = prepare_data(vae=None, data=None)                # DataSplits(train_latents, val_latents, eval_images)
    results, notes = evaluate_tokenizer(model, vae, data.eval_images)
    print(format_scores(results, RESULT_COLUMNS))           # format_scores: from revq_core.evaluation.protocol
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import torch

from revq_core.autoencoders.adapters import as_latent_autoencoder, decode, encode
from revq_core.autoencoders.loading import load_vae
from revq_core.data.images import ImageFolderDataset
from revq_core.data.latents import embedded_latents, encode_image_folder
from revq_core.data.photos import build_photo_dataset
from revq_core.evaluation.metrics import to_unit_range
from revq_core.evaluation.protocol import Evaluator, perceptual_networks
from revq_core.evaluation.rate import code_report
from revq_core.utils.checks import check_device
from revq_core.utils.files import cache_dir


def check_run_setup(device: str | torch.device, output_dir: str | os.PathLike | None, config=None) -> None:
    """Fail before any work if ``device`` cannot run here or ``output_dir`` cannot be a directory we write.

    Raises (one line each): the errors of ``checks.check_device`` for the device, NotADirectoryError if ``output_dir`` or one of its parents is an existing file, PermissionError if
    the directory that would hold it is not writable. ``output_dir=None`` (no files written) passes.
    With ``config``, it must be a ``TrainConfig`` (which checked its own fields when it was made).
    """
    if config is not None:
        from revq_core.training.config import TrainConfig

        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig (e.g. preset('demo')), got {type(config).__name__}.")
    check_device(device)
    if output_dir is None:
        return
    path = Path(output_dir).expanduser()
    for existing in (path, *path.parents):
        if existing.exists():
            break
    if not existing.is_dir():
        what = "output_dir" if existing == path else f"output_dir's parent {str(existing)!r}"
        raise NotADirectoryError(f"{what} is an existing file, not a directory (output_dir={str(output_dir)!r}): "
                                 f"choose another output_dir, or move the file away.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"output_dir {str(output_dir)!r} cannot be written: {str(existing)!r} is not writable "
                              f"by this user; choose another output_dir.")


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
    vae_key = as_latent_autoencoder(vae).cache_key()
    root_key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]  # A/data and B/data: two caches
    latents = {}
    for split in ("train", "val"):  # "bilinear": resize_center_crop's resampling (older caches were bicubic)
        # .npy: the memory-mapped, resumable cache (ImageNet's train latents do not fit in RAM twice)
        cache_path = cache_dir() / f"latents_{root.name}-{root_key}_{split}_{image_size}_bilinear_vae{vae_key}.npy"
        latents[split] = encode_image_folder(vae, root / split, image_size, cache_path=cache_path, progress=progress)
    val_images = ImageFolderDataset(root / "val", size=image_size)
    count = min(num_eval_images, len(val_images))
    eval_images = torch.stack([val_images[index][0] for index in range(count)])
    return DataSplits(latents["train"], latents["val"], eval_images)


@torch.no_grad()
def reconstruct_images(model, vae, images: torch.Tensor, batch_size: int = 64, rectify: bool = True,
                       return_codes: bool = False):
    """(VAE-only, ReVQ) reconstructions of images (N, 3, H, W) in [-1, 1], both (N, 3, H, W) on the CPU; with
    ``return_codes`` also the codes (N, T). ``rectify=False`` decodes the quantized latent without the rectifier
    (the quantizer alone, denormalized): the "without rectifier" rows of notebooks/08_baselines."""
    latents = encode(vae, images, batch_size)  # (N, C, h, w)
    codes = torch.cat([model.tokenize(part.to(model.normalizer.mean.device)).cpu() for part in latents.split(batch_size)])
    with torch.no_grad():
        if rectify:
            revq_latents = torch.cat([model.detokenize(part.to(model.normalizer.mean.device)).cpu()
                                      for part in codes.split(batch_size)])
        else:
            revq_latents = torch.cat([model.normalizer.denormalize(model.quantizer.decode(part.to(
                model.normalizer.mean.device))).cpu() for part in codes.split(batch_size)])
    reconstructions = decode(vae, latents, batch_size), decode(vae, revq_latents, batch_size)
    return (*reconstructions, codes) if return_codes else reconstructions


def evaluate_tokenizer(model, vae, images: torch.Tensor, batch_size: int = 64, lpips_weights=None,
                       rfid_weights=None, rectify: bool = True) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Pixel metrics of the VAE alone and of ReVQ (VAE + tokens) against the originals, under both protocols.

    images: (N, 3, H, W) in [-1, 1]. Returns ({"vae": metrics, "revq": metrics}, notes). Metrics:
    - the paper protocol (``revq_core.evaluate``), the only numbers to set beside the paper's:
      ``paper_psnr`` (PSNR of the red channel) and ``paper_ssim`` (SSIM of the YIQ luma), on
      reconstructions rounded to 8 bits;
    - the standard protocol: ``psnr_rgb``, ``psnr_y``, ``ssim_rgb``, ``ssim_y`` (RGB and BT.601 luma);
    - lpips, rfid and inception_score (shared by both) when their weights and packages are on this
      machine; otherwise ``notes`` says, in one line each, what is missing and where to put it.
    ``num_images`` too, and in the "revq" row the rate of its codes over these images (``evaluation.rate``):
    ``bits_per_image``, ``entropy_bits``, ``usage``. ``rectify=False`` scores the quantizer without its rectifier.
    The in-memory counterpart of ``revq_core.evaluation.protocol.evaluate_image_folder``.
    """
    vae_images, revq_images, codes = reconstruct_images(model, vae, images, batch_size, rectify, return_codes=True)
    lpips_net, inception_net, missing = perceptual_networks(lpips_weights=lpips_weights,
                                                            rfid_weights=rfid_weights)
    evaluator = Evaluator(("vae", "revq"), lpips=lpips_net, inception=inception_net)
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        evaluator.update(to_unit_range(images[part]), {"vae": to_unit_range(vae_images[part]),
                                                       "revq": to_unit_range(revq_images[part])})
    computed = evaluator.compute()
    missing.update(computed["missing_metrics"])
    results = {}
    for name in ("vae", "revq"):
        paper = computed["protocols"]["paper"][name]
        results[name] = {"paper_psnr": paper["psnr"], "paper_ssim": paper["ssim"],
                         **computed["protocols"]["standard"][name], "num_images": computed["num_images"]}
    rate = code_report(model, codes)
    results["revq"].update({key: rate[key] for key in ("bits_per_image", "entropy_bits", "usage")})
    notes = []
    if "lpips" in missing:
        notes.append(f"LPIPS skipped: {missing['lpips']}")
    if "rfid" in missing:
        notes.append(f"rFID skipped (and the Inception Score): {missing['rfid']}")
    return results, notes


# The columns of evaluate_tokenizer's results, as protocol.format_scores prints them: the paper protocol's first, then
# the standard protocol's, then the shared ones.
RESULT_COLUMNS = ("paper_psnr", "paper_ssim", "psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "lpips", "rfid",
                  "inception_score")
