"""Train an embedded VAE (a small AutoencoderDC) on the embedded photo crops, on CPU.

    python scripts/pretrain_vae.py --minutes 90               # the default VAE v2 (data/embedded_vae_v2; see
                                                               # data/README.md for the exact run that made it)
    python scripts/pretrain_vae.py --minutes 30 --resume       # continue after an interruption
    python scripts/pretrain_vae.py --evaluate                  # PSNR/SSIM vs same-budget bicubic + figures
    python scripts/pretrain_vae.py --version v1 --minutes 120  # the first one, f8c32 at 64 px (data/embedded_vae)

Loss: L1 + MSE on pixels in [-1, 1]. AdamW, linear warm-up then cosine decay to 5%, over ``--steps``
steps or, by default, over the ``--minutes`` budget (the learning rate follows the fraction of the time
spent, so the run always ends annealed, however busy the shared CPU is; the log records step and lr). An exponential moving average (EMA) of the weights is
what gets evaluated and shipped.

Outputs:
- ``.cache/pretrain_vae_v2/checkpoint.pt`` (v1: ``.cache/pretrain_vae/``; model, EMA, optimizer, scheduler,
  step, RNG states), written atomically every ``--checkpoint-minutes``; ``--resume`` continues from it.
- ``data/embedded_vae_v2/`` (v1: ``data/embedded_vae/``; config.json + fp16 safetensors): the best EMA model
  so far by validation PSNR, rewritten every ``--export-minutes`` and at the end, so a usable model exists
  whenever the run stops; ``training_log.csv`` beside it: step, time, lr, train loss, validation PSNR.
After a new VAE v2, run ``python scripts/ship_embedded_latents.py``: the shipped latents
(``data/embedded_latents``) record the old weights' digest, so they are ignored (every run encodes again) and
tests/data/test_shipped_latents.py fails until they are rewritten.
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from revq_core.autoencoders.adapters import decode, encode
from revq_core.autoencoders.embedded import (EMBEDDED_VAE_CORPUS, build_embedded_vae, embedded_vae_path,
                                             embedded_vae_v2_config)
from revq_core.autoencoders.loading import load_vae
from revq_core.data.photos import build_photo_dataset, uint8_to_float
from revq_core.evaluation.protocol import format_scores
from revq_core.evaluation.vae_quality import QUALITY_COLUMNS, bicubic_baseline, reconstruction_quality
from revq_core.utils.files import atomic_write, cache_dir  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=90.0, help="wall-clock budget of this invocation")
    parser.add_argument("--steps", type=int, default=None,
                        help="total optimizer steps for the cosine schedule (default: the schedule follows the "
                             "fraction of --minutes spent, so a busy machine still ends at a low learning rate)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--train-crops", type=int, default=49152, help="training crops of the train photos")
    parser.add_argument("--val-crops", type=int, default=256, help="validation crops evaluated during training")
    parser.add_argument("--eval-every", type=int, default=200, help="steps between validation passes")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--export-minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--run-dir", type=Path, default=None, help="default: <cache>/pretrain_vae")
    parser.add_argument("--out", type=Path, default=None, help="default: data/embedded_vae_v2 (v1: data/embedded_vae)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--evaluate", action="store_true", help="only evaluate the saved model and draw the figure")
    parser.add_argument("--version", choices=("v1", "v2"), default="v2",
                        help="v1: f8c32 on 64 x 64 crops of the 12 pip-package photos (data/embedded_vae); "
                             "v2: f16c32 on 128 x 128 crops of the 97 photos of data/photos (data/embedded_vae_v2)")
    parser.add_argument("--patch-size", type=int, default=None,
                        help="train on random patches of this side cut from the crops (v2 default 64: 4x cheaper "
                             "steps) until the last --full-size-fraction of the run, then on whole crops")
    parser.add_argument("--full-size-fraction", type=float, default=0.25)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def lr_factor(step: int, total_steps: int, warmup_steps: int, final: float = 0.05) -> float:
    """Linear warm-up to 1, then cosine decay to ``final`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(reconstruction, images) + F.mse_loss(reconstruction, images)


@torch.no_grad()
def update_ema(ema_model, model, step: int, decay: float) -> None:
    decay = min(decay, (1 + step) / (10 + step))  # short memory early on
    for ema_parameter, parameter in zip(ema_model.parameters(), model.parameters()):
        ema_parameter.lerp_(parameter, 1 - decay)


def psnr_rgb(vae, images: torch.Tensor) -> float:
    """Mean per-image RGB PSNR (dB) of the VAE on images (N, 3, H, W) in [-1, 1]."""
    reconstruction = decode(vae, encode(vae, images, 128), 128)
    mse = ((reconstruction - images) / 2).pow(2).flatten(1).mean(1).double()
    return float((-10 * torch.log10(mse)).mean())


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda file: torch.save(obj, file))


def export_model(model, out_dir: Path) -> None:
    """``save_pretrained`` as fp16 safetensors into ``out_dir``, swapped in atomically (other files kept)."""
    tmp_dir = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # silence "modules that should be kept in float32: []"
    copy.deepcopy(model).to(torch.float16).save_pretrained(tmp_dir, safe_serialization=True)
    diffusers_logging.set_verbosity(verbosity)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in tmp_dir.iterdir():
        os.replace(path, out_dir / path.name)
    tmp_dir.rmdir()


# ---------------------------------------------------------------------------------------------------------------


def train(args) -> None:
    run_dir = args.run_dir or cache_dir() / "pretrain_vae"
    out_dir = args.out
    checkpoint_path = run_dir / "checkpoint.pt"
    log_path = out_dir / "training_log.csv"
    seed_everything(args.seed)

    train_crops = build_photo_dataset("train", args.train_crops, seed=0, as_uint8=True, progress=True, **crop_settings(args))
    val_images = build_photo_dataset("val", args.val_crops, seed=0, **crop_settings(args))
    print(f"train crops {tuple(train_crops.shape)}, val crops {tuple(val_images.shape)}", flush=True)

    model = build_embedded_vae(embedded_vae_v2_config() if args.version == "v2" else None)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99))
    step, best_psnr, elapsed_before, total_steps = 0, -math.inf, 0.0, args.steps
    if args.resume and checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        ema_model.load_state_dict(checkpoint["ema_model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, best_psnr = checkpoint["step"], checkpoint["best_psnr"]
        elapsed_before, total_steps = checkpoint["elapsed_s"], args.steps or checkpoint["total_steps"]
        set_rng_state(checkpoint["rng"])
        print(f"resumed from {checkpoint_path} at step {step} (best val PSNR {best_psnr:.2f} dB)", flush=True)
    elif args.resume:
        print(f"--resume: no checkpoint at {checkpoint_path}, starting from scratch", flush=True)
    num_parameters = sum(p.numel() for p in model.parameters())
    print(f"embedded VAE: {num_parameters / 1e6:.2f} M parameters; lr {args.lr}, batch {args.batch_size}", flush=True)

    new_log = not log_path.is_file() or not args.resume
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "w" if new_log else "a", newline="")
    log = csv.writer(log_file)
    if new_log:
        log.writerow(["step", "elapsed_s", "lr", "train_loss", "train_psnr_rgb", "val_psnr_rgb_ema"])

    start = time.time()
    deadline = start + args.minutes * 60
    last_checkpoint, last_export = start, -math.inf  # the first improvement is exported at once
    running_loss, running_mse, running_count = 0.0, 0.0, 0
    model.train()
    progress = tqdm(total=total_steps, initial=step, desc="pretrain", mininterval=30)

    def save_checkpoint():
        atomic_torch_save({"model": model.state_dict(), "ema_model": ema_model.state_dict(),
                           "optimizer": optimizer.state_dict(), "step": step, "best_psnr": best_psnr,
                           "elapsed_s": elapsed_before + time.time() - start, "total_steps": total_steps,
                           "rng": rng_state(), "args": vars(args), "best_state": best_state}, checkpoint_path)

    best_state = checkpoint.get("best_state") if args.resume and checkpoint_path.is_file() else None
    best_exported = True

    def export_best():
        best_model = copy.deepcopy(ema_model)
        best_model.load_state_dict(best_state)
        export_model(best_model, out_dir)
        print(f"exported the best EMA model (val PSNR {best_psnr:.2f} dB) to {out_dir}", flush=True)

    while time.time() < deadline and (total_steps is None or step < total_steps):
        if total_steps is None:  # schedule by the fraction of the time budget spent
            progress_fraction = (elapsed_before + time.time() - start) / (elapsed_before + deadline - start)
            factor = lr_factor(int(progress_fraction * 10**6), 10**6, 0) if step >= args.warmup_steps else \
                (step + 1) / args.warmup_steps
        else:
            factor = lr_factor(step, total_steps, args.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * factor

        indices = torch.randint(0, len(train_crops), (args.batch_size,))
        images = uint8_to_float(train_crops[indices])
        if total_steps is None:
            fraction = (elapsed_before + time.time() - start) / (elapsed_before + deadline - start)
        else:
            fraction = step / total_steps
        patch = args.patch_size if args.patch_size and fraction < 1 - args.full_size_fraction else None
        if patch and patch < images.shape[-1]:  # one random patch position per batch
            top, left = (int(value) for value in torch.randint(0, images.shape[-1] - patch + 1, (2,)))
            images = images[..., top:top + patch, left:left + patch]
        flip = torch.rand(args.batch_size) < 0.5  # the crops are flipped once more, independently
        images[flip] = images[flip].flip(-1)
        reconstruction = model.decode(model.encode(images).latent).sample
        loss = reconstruction_loss(reconstruction, images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        update_ema(ema_model, model, step, args.ema_decay)
        step += 1
        progress.update(1)
        running_loss += loss.item()
        running_mse += (F.mse_loss(reconstruction.detach().clamp(-1, 1), images) / 4).item()
        running_count += 1

        now = time.time()
        if step % args.eval_every == 0 or now >= deadline or step == total_steps:
            val_psnr = psnr_rgb(ema_model.eval(), val_images)
            train_psnr = -10 * math.log10(running_mse / running_count)
            lr = optimizer.param_groups[0]["lr"]
            log.writerow([step, round(elapsed_before + now - start, 1), f"{lr:.3e}", f"{running_loss / running_count:.5f}",
                          f"{train_psnr:.2f}", f"{val_psnr:.2f}"])
            log_file.flush()
            print(f"\nstep {step}: loss {running_loss / running_count:.4f}, train PSNR {train_psnr:.2f} dB, "
                  f"val PSNR (EMA) {val_psnr:.2f} dB, lr {lr:.2e}", flush=True)
            running_loss, running_mse, running_count = 0.0, 0.0, 0
            if val_psnr > best_psnr:
                best_psnr, best_state, best_exported = val_psnr, copy.deepcopy(ema_model.state_dict()), False
        if time.time() - last_checkpoint > args.checkpoint_minutes * 60:
            save_checkpoint()
            last_checkpoint = time.time()
        if not best_exported and time.time() - last_export > args.export_minutes * 60:
            export_best()
            last_export, best_exported = time.time(), True

    progress.close()
    save_checkpoint()
    if not best_exported:
        export_best()
    log_file.close()
    print(f"done at step {step}; best val PSNR {best_psnr:.2f} dB; model in {out_dir}", flush=True)


def evaluate(args) -> None:
    """Test-split PSNR/SSIM of the saved embedded VAE beside bicubic; writes quality.json and the figures.

    Both protocols: the standard one (RGB and BT.601 luma, ``reconstruction_quality``) and the paper's
    (``paper_psnr``: the red channel, ``paper_ssim``: the YIQ luma, on 8-bit reconstructions).
    """
    from revq_core.evaluation.metrics import paper_psnr, paper_ssim, to_unit_range

    out_dir = args.out
    vae = load_vae(out_dir)
    images = build_photo_dataset("test", **crop_settings(args))
    latents = encode(vae, images, 128)
    reconstructions = decode(vae, latents, 128)
    bicubic = bicubic_baseline(images, latents[0].numel())  # 26 x 26 x 3 = 2028 <= 32 x 8 x 8 = 2048 values

    def both_protocols(reference, reconstruction):
        scores = reconstruction_quality(reference, reconstruction)
        target, pred = to_unit_range(reference), to_unit_range(reconstruction)
        scores["paper_psnr"] = float(paper_psnr(pred, target).double().mean())
        scores["paper_ssim"] = float(paper_ssim(pred, target).double().mean())
        return scores

    quality = {}
    for name, count in (("test", len(images)), ("test_first_128", 128)):
        quality[name] = {"vae": both_protocols(images[:count], reconstructions[:count]),
                         "bicubic": both_protocols(images[:count], bicubic[:count])}
    side = images.shape[-1]
    held_out = "coffee, grace_hopper" if args.version == "v1" else "the 14 photos of data/photos/test"
    print(f"test split: {len(images)} crops {side} x {side} of the held-out photos ({held_out}), "
          f"latent {tuple(latents.shape[1:])}")
    print(format_scores(quality["test"], QUALITY_COLUMNS))
    test = quality["test"]
    print(f"paper protocol: VAE PSNR {test['vae']['paper_psnr']:.2f} dB, SSIM {test['vae']['paper_ssim']:.4f}; "
          f"bicubic PSNR {test['bicubic']['paper_psnr']:.2f} dB, SSIM {test['bicubic']['paper_ssim']:.4f}")
    quality["command"] = "python scripts/pretrain_vae.py --evaluate" + (" --version v2" if args.version == "v2" else "")
    quality["weights_sha1"] = weights_digest(out_dir)
    (out_dir / "quality.json").write_text(json.dumps(quality, indent=2) + "\n")
    print(f"wrote {out_dir / 'quality.json'}")
    suffix = "" if args.version == "v1" else "_v2"
    save_figure(images[:8], reconstructions[:8], bicubic[:8],
                REPO / "figures" / f"embedded_vae{suffix}_reconstructions.png", quality["test"], latents.shape[1:])
    if (out_dir / "training_log.csv").is_file():
        save_learning_curve(out_dir / "training_log.csv", REPO / "figures" / f"embedded_vae{suffix}_learning_curve.png",
                            quality["test"])


def weights_digest(model_dir: Path) -> str:
    """sha1 of the model's safetensors files: ties quality.json to the weights it was measured on."""
    digest = hashlib.sha1()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def save_figure(images, reconstructions, bicubic, path: Path, results, latent_shape=(32, 8, 8)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from revq_core.paper.plots import image_rows

    rows = {"original": images, f"embedded VAE ({results['vae']['psnr_rgb']:.1f} dB)": reconstructions,
            f"bicubic 26x26 ({results['bicubic']['psnr_rgb']:.1f} dB)": bicubic}
    side, latent = images.shape[-1], "x".join(str(size) for size in latent_shape)
    figure = image_rows(rows, f"Held-out test crops ({side} x {side}): originals, embedded VAE ({latent} latent), "
                              f"bicubic (26x26x3)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"figure saved to {path}")


def save_learning_curve(log_path: Path, path: Path, results) -> None:
    """Train and validation PSNR against step, from training_log.csv, with the test results as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path) as file:
        rows = list(csv.DictReader(file))
    steps = [int(row["step"]) for row in rows]
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot(steps, [float(row["train_psnr_rgb"]) for row in rows], label="train batches (live weights)")
    axis.plot(steps, [float(row["val_psnr_rgb_ema"]) for row in rows], label="val photo (EMA weights)")
    axis.axhline(results["vae"]["psnr_rgb"], color="C2", linestyle="--", label="test photos, final model")
    axis.axhline(results["bicubic"]["psnr_rgb"], color="C3", linestyle=":", label="test photos, bicubic 26x26")
    axis.set_xlabel("step (batch 32)")
    axis.set_ylabel("RGB PSNR (dB)")
    axis.set_title("Embedded VAE pre-training on 2 CPU cores", fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"figure saved to {path}")


def vae_name(args) -> str:
    """The ``load_vae`` name of the embedded VAE this run builds."""
    return "embedded-v2" if args.version == "v2" else "embedded"


def crop_settings(args) -> dict:
    """Arguments of ``build_photo_dataset`` for the chosen version (v2: corpus v2, 128 x 128 crops; v1: 64 x 64)."""
    return {"corpus": EMBEDDED_VAE_CORPUS[vae_name(args)]}


def main(argv=None) -> None:
    args = parse_args(argv)
    args.out = args.out or embedded_vae_path(vae_name(args))
    if args.version == "v2":
        args.run_dir = args.run_dir or cache_dir() / "pretrain_vae_v2"
        args.patch_size = 64 if args.patch_size is None else args.patch_size
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    if args.evaluate:
        evaluate(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
