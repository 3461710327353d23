"""Train the tokenizer that ships in ``data/embedded_tokenizer``: ReVQ on the embedded VAE v2's latents, on CPU.

    python scripts/train_embedded_tokenizer.py                  # ~30 min on 2 cores; resumable (--resume)
    python scripts/train_embedded_tokenizer.py --evaluate       # quality.json and the figure only

The paper's 512-token layout (T = 512 tokens of D = 4 channels, one codebook per token position) on the
32 x 8 x 8 latents of 128 x 128 crops of the photo corpus v2 (``data/photos``), encoded once by the f16c32
VAE in ``data/embedded_vae_v2``. K and the ViT rectifier are as large as a 2-core CPU trains in about half
an hour; the rectifier starts at the identity (``rectifier_residual``, as the ``demo`` preset: not the
paper's form, which needs far more steps to learn the identity first). Saved with ``save_pretrained``
(under 30 MB), loadable offline in one line:

    ReVQ.from_pretrained("data/embedded_tokenizer")  # or: python -m revq_core.tokenize_images <images> --out codes.npz

``--evaluate`` measures, on held-out crops of the test photos, the tokenizer beside the VAE alone and beside
the ``demo`` preset trained on the same latents (both protocols: the paper's and the standard one), writes
``data/embedded_tokenizer/quality.json`` and ``figures/embedded_tokenizer_reconstructions.png``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from revq_core.autoencoders import load_vae  # noqa: E402
from revq_core.data.latents import embedded_latents  # noqa: E402
from revq_core.data.photos import build_photo_dataset  # noqa: E402
from revq_core.modeling.revq import ReVQ  # noqa: E402
from revq_core.pipeline import evaluate_tokenizer, reconstruct_images  # noqa: E402
from revq_core.training.config import preset  # noqa: E402
from revq_core.training.trainer import train  # noqa: E402
from revq_core.utils.files import cache_dir  # noqa: E402

VAE = "embedded-v2"
OUT = REPO / "data" / "embedded_tokenizer"
QUALITY_KEYS = ("paper_psnr", "paper_ssim", "psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")
RATE_KEYS = ("bits_per_image", "entropy_bits", "usage")  # the codes' rate over the same images (evaluation.rate)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codes-per-group", type=int, default=2048, help="K (the codebook is 512 x K x 4 floats)")
    parser.add_argument("--rectifier-width", type=int, default=128)
    parser.add_argument("--rectifier-depth", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-crops", type=int, default=16384)
    parser.add_argument("--test-images", type=int, default=256, help="held-out test crops the quality is measured on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--run-dir", type=Path, default=None, help="default: <cache>/embedded_tokenizer_run")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument("--evaluate", action="store_true", help="only measure the saved tokenizer and draw the figure")
    return parser.parse_args(argv)


def tokenizer_config(args):
    return preset("demo", codes_per_group=args.codes_per_group, rectifier_width=args.rectifier_width,
                  rectifier_depth=args.rectifier_depth, epochs=args.epochs, batch_size=args.batch_size,
                  seed=args.seed, num_threads=args.threads)


def train_tokenizer(args) -> None:
    run_dir = args.run_dir or cache_dir() / "embedded_tokenizer_run"
    train_latents = embedded_latents("train", args.train_crops, vae=VAE)
    val_latents = embedded_latents("val", vae=VAE)
    config = tokenizer_config(args)
    started = time.time()
    model, history = train(config, train_latents, val_latents, output_dir=run_dir, resume=args.resume,
                           overwrite=not args.resume, vae=VAE)
    print(f"trained in {time.time() - started:.0f} s: validation latent MSE {history.val_mse[-1]:.4f} (quantizer "
          f"only {history.val_quant_mse[-1]:.4f}), codebook usage {history.usage[-1]:.1%}", flush=True)
    shutil.rmtree(args.out, ignore_errors=True)
    model.save_pretrained(args.out)
    size = sum(path.stat().st_size for path in args.out.iterdir()) / 2**20
    print(f"saved to {args.out} ({size:.1f} MiB)")


def weights_sha1(model_dir: Path) -> str:
    return hashlib.sha1((model_dir / "model.safetensors").read_bytes()).hexdigest()


def evaluate(args) -> dict:
    """The tokenizer, the VAE alone and the demo preset on held-out test crops; quality.json and the figure."""
    torch.set_num_threads(args.threads)
    vae = load_vae(VAE)
    tokenizer = ReVQ.from_pretrained(args.out)
    images = build_photo_dataset("test", corpus="v2")[:args.test_images]
    results, notes = evaluate_tokenizer(tokenizer, vae, images)
    train_latents = embedded_latents("train", args.train_crops, vae=VAE)
    val_latents = embedded_latents("val", vae=VAE)
    demo, _ = train(preset("demo", seed=args.seed, num_threads=args.threads), train_latents, val_latents,
                    vae=VAE, progress=False)
    demo_results, _ = evaluate_tokenizer(demo, vae, images)
    quality = {"vae": {key: results["vae"][key] for key in QUALITY_KEYS},
               "tokenizer": {key: results["revq"][key] for key in QUALITY_KEYS},
               "demo_preset": {key: demo_results["revq"][key] for key in QUALITY_KEYS},
               "rate": {name: {key: scores["revq"][key] for key in RATE_KEYS}
                        for name, scores in (("tokenizer", results), ("demo_preset", demo_results))},
               "num_images": results["vae"]["num_images"],
               "images": f"the first {len(images)} of the 1024 128 x 128 test crops (seed 0) of data/photos/test",
               # the model's fields as saved (not the arguments: they may differ), the recipe's from the arguments
               "config": {**{key: value for key, value in tokenizer.config.to_dict().items()
                             if key in ("tokens_per_image", "codes_per_group", "rectifier", "rectifier_width",
                                        "rectifier_depth", "rectifier_residual")},
                          "epochs": args.epochs, "batch_size": args.batch_size, "train_crops": args.train_crops},
               "command": "python scripts/train_embedded_tokenizer.py --evaluate",
               "weights_sha1": weights_sha1(args.out), "notes": notes}
    first, _ = evaluate_tokenizer(tokenizer, vae, images[:64])  # what tests/test_embedded_tokenizer.py re-measures
    quality["test_first_64"] = {"vae": {key: first["vae"][key] for key in QUALITY_KEYS},
                                "tokenizer": {key: first["revq"][key] for key in QUALITY_KEYS}}
    (args.out / "quality.json").write_text(json.dumps(quality, indent=2) + "\n")
    for name in ("vae", "tokenizer", "demo_preset"):
        scores = quality[name]
        print(f"{name:12s} paper PSNR {scores['paper_psnr']:6.2f}  SSIM {scores['paper_ssim']:.3f} | standard PSNR-Y "
              f"{scores['psnr_y']:6.2f}  PSNR-RGB {scores['psnr_rgb']:6.2f}  SSIM-Y {scores['ssim_y']:.3f}")
    gap = quality["vae"]["paper_psnr"] - quality["tokenizer"]["paper_psnr"]
    print(f"tokenizer vs VAE alone: {gap:.2f} dB below (paper protocol); goal: within 3 dB")
    save_figure(tokenizer, demo, vae, images[:8], quality, REPO / "figures" / "embedded_tokenizer_reconstructions.png")
    return quality


def save_figure(tokenizer, demo, vae, images, quality, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from revq_core.paper.plots import image_rows

    vae_images, tokenizer_images = reconstruct_images(tokenizer, vae, images)
    _, demo_images = reconstruct_images(demo, vae, images)
    rows = {"original": images,
            f"VAE alone ({quality['vae']['paper_psnr']:.1f} dB)": vae_images,
            f"shipped tokenizer ({quality['tokenizer']['paper_psnr']:.1f} dB)": tokenizer_images,
            f"demo preset ({quality['demo_preset']['paper_psnr']:.1f} dB)": demo_images}
    figure = image_rows(rows, "Held-out test crops (128 x 128) through the embedded VAE v2 and 512 tokens "
                              "(paper-protocol PSNR)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"figure saved to {path}")


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    if not args.evaluate:
        train_tokenizer(args)
    evaluate(args)


if __name__ == "__main__":
    main()
