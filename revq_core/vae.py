"""The frozen VAE of the pipeline: the embedded offline default or a DC-AE checkpoint.

``load_vae()`` with no argument returns the *embedded VAE*: a small diffusers ``AutoencoderDC``
of the DC-AE family (ResBlock stages, then EfficientViTBlock stages, pixel_unshuffle down and
pixel_shuffle up, no blocks at full resolution, as DC-AE in-1.0 does) that turns a 64 x 64 x 3
image into the paper's latent shape 32 x 8 x 8 (f8c32). Its weights live in ``data/embedded_vae/``
(``save_pretrained`` format: config.json + safetensors) and are trained on the embedded photo set by
``scripts/pretrain_vae.py``. ``load_vae("mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")`` (or the
in-1.0 id) loads the paper's DC-AE from the Hugging Face cache or a local directory.

Images are float tensors in [-1, 1] of shape (B, 3, H, W); latents are (B, 32, H/f, W/f), unscaled
(the ``scaling_factor`` of the config is not applied: ReVQ normalizes every latent dimension itself).

    python -m revq_core.vae evaluate      # PSNR/SSIM of the embedded VAE on the held-out test photos
"""
from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

EMBEDDED_VAE_DIRNAME = Path("data") / "embedded_vae"
# Names load_vae accepts for the VAEs shipped in this repository (a tokenizer records one in its config).
EMBEDDED_VAE_DIRS = {"embedded": EMBEDDED_VAE_DIRNAME, "embedded-v2": Path("data") / "embedded_vae_v2"}
# The DC-AE checkpoints of the paper's family on the Hugging Face hub (diffusers format).
DC_AE_HUB_IDS = ("mit-han-lab/dc-ae-f32c32-in-1.0-diffusers", "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")
PRETRAIN_COMMAND = "python scripts/pretrain_vae.py --minutes 120"


class VAENotFoundError(FileNotFoundError):
    """The requested VAE weights are not on this machine; the message says how to get them."""


def embedded_vae_config() -> dict:
    """Config of the embedded VAE: a small f8c32 ``AutoencoderDC`` (64 x 64 x 3 -> 32 x 8 x 8).

    Four stages at 32, 32, 16 and 8 pixels for a 64 x 64 input: no blocks at full resolution
    (layers_per_block[0] = 0: the input conv pixel-unshuffles straight to 32 x 32, as in DC-AE in-1.0),
    ResBlocks at 32 x 32 and 16 x 16, EfficientViT blocks (linear attention with a 5 x 5 multi-scale
    branch) at 8 x 8. Widths chosen for CPU throughput (see data/README.md for the timings).
    """
    return dict(
        in_channels=3,
        latent_channels=32,
        attention_head_dim=32,
        encoder_block_types=("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(32, 48, 96, 192),
        decoder_block_out_channels=(32, 48, 96, 192),
        encoder_layers_per_block=(0, 1, 2, 2),
        decoder_layers_per_block=(0, 2, 2, 2),
        encoder_qkv_multiscales=((), (), (), (5,)),
        decoder_qkv_multiscales=((), (), (), (5,)),
        upsample_block_type="pixel_shuffle",
        downsample_block_type="pixel_unshuffle",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=1.0,
    )


def embedded_vae_v2_config() -> dict:
    """Config of the embedded VAE v2: an f16c32 ``AutoencoderDC`` (128 x 128 x 3 -> 32 x 8 x 8, 24x compression).

    Five stages at 64, 64, 32, 16 and 8 pixels for a 128 x 128 input (the input conv pixel-unshuffles to
    64 x 64; no blocks at full resolution), ResBlocks on the first four, EfficientViT blocks (linear
    attention with a 5 x 5 multi-scale branch) at 8 x 8; 10.9 M parameters. Being convolutional with
    linear attention it also runs on 64 x 64 patches (-> 32 x 4 x 4), which is how most of its training
    steps are taken (4x cheaper; see ``scripts/pretrain_vae.py``).
    """
    return dict(
        in_channels=3,
        latent_channels=32,
        attention_head_dim=32,
        encoder_block_types=("ResBlock", "ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(32, 48, 96, 192, 256),
        decoder_block_out_channels=(32, 48, 96, 192, 256),
        encoder_layers_per_block=(0, 1, 1, 2, 2),
        decoder_layers_per_block=(0, 1, 2, 2, 2),
        encoder_qkv_multiscales=((), (), (), (), (5,)),
        decoder_qkv_multiscales=((), (), (), (), (5,)),
        upsample_block_type="pixel_shuffle",
        downsample_block_type="pixel_unshuffle",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=1.0,
    )


def build_embedded_vae(config: dict | None = None):
    """A freshly initialised embedded VAE (``AutoencoderDC``), for training."""
    from diffusers import AutoencoderDC

    return AutoencoderDC(**(config or embedded_vae_config()))


def embedded_vae_dir() -> Path:
    """Where the embedded VAE weights live: ``$REVQ_EMBEDDED_VAE`` if set, else ``data/embedded_vae`` in the repo."""
    if os.environ.get("REVQ_EMBEDDED_VAE"):
        return Path(os.environ["REVQ_EMBEDDED_VAE"])
    return Path(__file__).resolve().parent.parent / EMBEDDED_VAE_DIRNAME


def _is_model_dir(path: Path) -> bool:
    """True if ``path`` holds a diffusers model: config.json and weights (safetensors or .bin)."""
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return (path / "config.json").is_file() and has_weights


def load_vae(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32):
    """Load a frozen ``AutoencoderDC`` in eval mode, without gradients.

    Args:
        name_or_path: None or "embedded" for the embedded VAE (``data/embedded_vae``), "embedded-v2" for the
            f16c32 one in ``data/embedded_vae_v2``; a local directory made by
            ``save_pretrained`` or ``hf download <id> --local-dir <dir>``; or a hub id such as
            ``mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers``, read from the Hugging Face cache (HF_HOME).
        device, dtype: where and in which precision to put the weights.

    Raises:
        VAENotFoundError (a FileNotFoundError): the weights are not on this machine; the message says
            what was tried and how to provide them.
    """
    from diffusers import AutoencoderDC

    if name_or_path == "embedded":
        name_or_path = None
    elif isinstance(name_or_path, str) and name_or_path in EMBEDDED_VAE_DIRS:
        path = Path(__file__).resolve().parent.parent / EMBEDDED_VAE_DIRS[name_or_path]
        if not _is_model_dir(path):
            raise VAENotFoundError(f"The VAE {name_or_path!r} is missing from {path} (no config.json + *.safetensors): "
                                   f"restore it with `git checkout -- {EMBEDDED_VAE_DIRS[name_or_path]}` or build it "
                                   f"with `python scripts/pretrain_vae.py --version v2`.")
        name_or_path = path
    if name_or_path is None:
        path = embedded_vae_dir()
        if not _is_model_dir(path):
            raise VAENotFoundError(f"The embedded VAE weights are missing from {path} (no config.json + *.safetensors). "
                                   f"Build them with `{PRETRAIN_COMMAND}` (2 CPU cores, 2 hours), or pass "
                                   f"load_vae(<directory or hub id>).")
        vae = AutoencoderDC.from_pretrained(path, torch_dtype=dtype, low_cpu_mem_usage=False)
    elif Path(name_or_path).expanduser().is_dir():
        path = Path(name_or_path).expanduser()
        if not _is_model_dir(path):
            raise VAENotFoundError(f"{path} is a directory but holds no diffusers model (config.json + *.safetensors). "
                                   f"Point load_vae at the folder made by `save_pretrained` or by "
                                   f"`hf download <id> --local-dir {path}`.")
        vae = AutoencoderDC.from_pretrained(path, torch_dtype=dtype, low_cpu_mem_usage=False)
    else:
        vae = _load_from_hub(str(name_or_path), dtype)
    return vae.to(device=device).eval().requires_grad_(False)


def _load_from_hub(model_id: str, dtype: torch.dtype):
    """Load a hub id from the local Hugging Face cache, else download it (when online)."""
    from diffusers import AutoencoderDC
    from huggingface_hub import constants

    if os.path.exists(model_id) or model_id.count("/") != 1:
        raise VAENotFoundError(f"{model_id!r} is neither an existing directory nor a hub id of the form 'owner/name' "
                               f"(e.g. {DC_AE_HUB_IDS[1]}).")
    try:  # the cache first: fast, and the only option offline
        with warnings.catch_warnings():  # diffusers passes an argument huggingface_hub deprecated
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return AutoencoderDC.from_pretrained(model_id, local_files_only=True, torch_dtype=dtype,
                                                 low_cpu_mem_usage=False)
    except (OSError, ValueError):
        pass
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set, so nothing is downloaded"
    else:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
                return AutoencoderDC.from_pretrained(model_id, torch_dtype=dtype, low_cpu_mem_usage=False)
        except (OSError, ValueError) as error:  # no network, no such repository, ...
            reason = f"the download failed: {str(error).strip().splitlines()[0] if str(error).strip() else error!r}"
    raise VAENotFoundError(
        f"Cannot load the VAE {model_id!r}: it is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {reason}. "
        f"On a machine with internet run `hf download {model_id} --local-dir <dir>`, copy <dir> here and "
        f"pass load_vae('<dir>') (or copy the whole cache and set HF_HOME); load_vae() with no argument uses the "
        f"embedded offline VAE.") from None


def downsampling_factor(vae) -> int | None:
    """The spatial downsampling factor f of a VAE (image side / latent side), or None if its config does not say.

    For an ``AutoencoderDC`` it is 2 ** (number of encoder stages - 1): 8 for the embedded VAE, 32 for DC-AE f32.
    """
    config = getattr(vae, "config", None)
    stages = getattr(config, "encoder_block_out_channels", None)
    return 2 ** (len(stages) - 1) if stages else None


def check_image_size(vae, images: torch.Tensor) -> None:
    """Raise a ValueError if the height or width of images (N, 3, H, W) is not a multiple of the VAE's factor f."""
    factor = downsampling_factor(vae)
    height, width = images.shape[-2:]
    if factor and (height % factor or width % factor):
        raise ValueError(f"images are {height} x {width} pixels, but this VAE downsamples by {factor}: height and "
                         f"width must be multiples of {factor} (resize or crop them, e.g. to "
                         f"{max(factor, height // factor * factor)} x {max(factor, width // factor * factor)}).")


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] -> latents (N, C, H/f, W/f) float32 on the CPU, in batches, no gradients.

    uint8 images in [0, 255] are accepted and converted. The latent is the encoder output (DC-AE is
    deterministic), without ``scaling_factor``. H and W must be multiples of ``downsampling_factor(vae)``.
    """
    if len(images) == 0:
        raise ValueError("No images to encode: got an empty batch.")
    check_image_size(vae, images)
    parameter = next(vae.parameters())
    latents = []
    for start in tqdm(range(0, len(images), batch_size), desc="encode", disable=not progress):
        batch = images[start:start + batch_size]
        if batch.dtype == torch.uint8:
            batch = batch.float() / 127.5 - 1.0
        batch = batch.to(device=parameter.device, dtype=parameter.dtype)
        latents.append(vae.encode(batch).latent.float().cpu())
    return torch.cat(latents)


@torch.no_grad()
def decode(vae, latents: torch.Tensor, batch_size: int = 64, clamp: bool = True, progress: bool = False) -> torch.Tensor:
    """Latents (N, C, h, w) -> images (N, 3, h*f, w*f) float32 on the CPU in [-1, 1] (clamped), in batches."""
    parameter = next(vae.parameters())
    images = []
    for start in tqdm(range(0, len(latents), batch_size), desc="decode", disable=not progress):
        batch = latents[start:start + batch_size].to(device=parameter.device, dtype=parameter.dtype)
        decoded = vae.decode(batch).sample.float().cpu()
        images.append(decoded.clamp(-1, 1) if clamp else decoded)
    return torch.cat(images)


def bicubic_baseline(images: torch.Tensor, num_values: int = 2048) -> torch.Tensor:
    """Bicubic resampling with about ``num_values`` numbers per image: the baseline a VAE must beat.

    (N, 3, H, W) in [-1, 1] -> down to (N, 3, s, s) with s = floor(sqrt(num_values / 3)) (antialiased
    bicubic; 26 x 26 x 3 = 2028 <= 2048 for the 32 x 8 x 8 latent), bicubic back up to (H, W), clamped.
    """
    import torch.nn.functional as F

    side = int((num_values / images.shape[1]) ** 0.5)
    small = F.interpolate(images, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(small, size=images.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)


def reconstruction_quality(reference: torch.Tensor, reconstruction: torch.Tensor,
                           chunk_size: int = 64) -> dict[str, float]:
    """Mean per-image PSNR (dB) and SSIM on RGB and on Y (BT.601 luma); images (N, 3, H, W) in [-1, 1].

    Computed ``chunk_size`` images at a time (SSIM's intermediate tensors are large).
    """
    from revq_core.metrics import psnr_per_image, ssim_per_image

    per_image: dict[str, list[torch.Tensor]] = {"psnr_rgb": [], "ssim_rgb": [], "psnr_y": [], "ssim_y": []}
    for start in range(0, len(reference), chunk_size):
        target, pred = reference[start:start + chunk_size].float(), reconstruction[start:start + chunk_size].float()
        for channel in ("rgb", "y"):
            per_image[f"psnr_{channel}"].append(psnr_per_image(pred, target, channel, value_range=(-1.0, 1.0)))
            per_image[f"ssim_{channel}"].append(ssim_per_image(pred, target, channel, value_range=(-1.0, 1.0)))
    return {name: float(torch.cat(scores).double().mean()) for name, scores in per_image.items()}


def evaluate_embedded_vae(vae=None, split: str = "test", num_crops: int | None = None,
                          batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Reconstruction quality of a VAE (default: the embedded one) and of the bicubic baseline on held-out crops."""
    from revq_core.data import build_photo_dataset

    vae = load_vae() if vae is None else vae
    images = build_photo_dataset(split, num_crops)
    reconstructions = decode(vae, encode(vae, images, batch_size), batch_size)
    with torch.no_grad():
        num_values = int(vae.encode(images[:1].to(next(vae.parameters()).dtype)).latent.numel())
    return {"vae": reconstruction_quality(images, reconstructions),
            "bicubic": reconstruction_quality(images, bicubic_baseline(images, num_values))}


def format_quality(results: dict[str, dict[str, float]]) -> str:
    """A small side-by-side table of ``evaluate_embedded_vae`` results."""
    lines = [f"{'':10s} {'PSNR RGB':>9s} {'SSIM RGB':>9s} {'PSNR Y':>8s} {'SSIM Y':>7s}"]
    for name, scores in results.items():
        lines.append(f"{name:10s} {scores['psnr_rgb']:9.2f} {scores['ssim_rgb']:9.4f} "
                     f"{scores['psnr_y']:8.2f} {scores['ssim_y']:7.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m revq_core.vae", description="Embedded VAE utilities.")
    sub = parser.add_subparsers(dest="command", required=True)
    evaluate = sub.add_parser("evaluate", help="PSNR/SSIM of a VAE and of bicubic resampling on held-out crops")
    evaluate.add_argument("--vae", default=None, help="directory or hub id (default: the embedded VAE)")
    evaluate.add_argument("--split", default="test", choices=["val", "test"])
    evaluate.add_argument("--num-crops", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    results = evaluate_embedded_vae(load_vae(args.vae), args.split, args.num_crops)
    print(f"{args.split} crops of the held-out photos, 64 x 64:")
    print(format_quality(results))


if __name__ == "__main__":
    main()
