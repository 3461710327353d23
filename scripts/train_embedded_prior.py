"""Train the shipped token prior ``data/embedded_prior`` and run the token-order study on the way.

    REVQ_NUM_THREADS=1 python scripts/train_embedded_prior.py > runs/embedded_prior.log 2>&1

1. pretokenizes the embedded photo crops with the shipped tokenizer (``data/embedded_tokenizer``): the train
   split's crops to train on, the val split's (other source photos) held out;
2. trains the ``embedded`` preset twice with the same budget (steps, batches, seed): channel-major order (the
   tokenizer's) and position-major order;
3. scores both on all held-out crops beside the per-position unigram baseline, writes the study to
   ``runs/embedded_prior/order_study.json`` and ships the better one to ``data/embedded_prior/`` (config.json,
   model.safetensors, quality.json, README.md).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from revq_core.data.codes import load_codebooks, load_codes, open_codes  # noqa: E402
from revq_core.data.latents import embedded_latents  # noqa: E402
from revq_core.generation.evaluation import unigram_bits_per_token  # noqa: E402
from revq_core.generation.pretokenize import pretokenize_latents  # noqa: E402
from revq_core.generation.train_prior import PRIOR_PRESETS, train_prior  # noqa: E402
from revq_core.utils.files import atomic_write_text  # noqa: E402

RUNS = REPO / "runs" / "embedded_prior"
SHIPPED = REPO / "data" / "embedded_prior"
COMMAND = "REVQ_NUM_THREADS=1 python scripts/train_embedded_prior.py"


def main() -> None:
    for split in ("train", "val"):
        if not (RUNS / f"ids_{split}" / "meta.json").is_file():
            pretokenize_latents(embedded_latents(split), RUNS / f"ids_{split}", progress=False)
    train_codes, meta = open_codes(RUNS / "ids_train")
    held_out, _, _ = load_codes(RUNS / "ids_val")
    codebooks = load_codebooks(RUNS / "ids_train")
    unigram = unigram_bits_per_token(train_codes, held_out, codebooks.shape[1])
    config = PRIOR_PRESETS["embedded"]
    study = {"unigram_bits": unigram, "preset": "embedded", "config": config.recipe_dict(),
             "train_images": len(train_codes), "held_out_images": len(held_out)}
    priors = {}
    for order in ("channel", "position"):
        started = time.perf_counter()
        arm = config.replace(architecture={**config.architecture, "order": order})
        prior, history = train_prior(train_codes, arm, codebooks, meta, held_out=held_out,
                                     output_dir=RUNS / order, resume=True, progress=False)
        bits = prior.bits_per_token(held_out)
        priors[order] = prior
        study[order] = {"held_out_bits": bits, "train_bits": history.train_bits[-1],
                        "seconds": time.perf_counter() - started, "history": history.to_dict()}
        print(f"{order}: held-out {bits:.4f} bits per token (unigram {unigram:.4f}); "
              f"{study[order]['seconds']:.0f} s", flush=True)
    best = min(("channel", "position"), key=lambda order: study[order]["held_out_bits"])
    study["better"] = best
    atomic_write_text(RUNS / "order_study.json", json.dumps(study, indent=2))
    prior = priors[best]
    prior.save_pretrained(SHIPPED)
    quality = {"held_out_bits_per_token": study[best]["held_out_bits"], "unigram_bits_per_token": unigram,
               "margin_bits_per_token": unigram - study[best]["held_out_bits"], "order": best,
               "other_order_bits_per_token": study["position" if best == "channel" else "channel"]["held_out_bits"],
               "held_out": f"{len(held_out)} val crops (source photos never cropped for training)",
               "train": f"{len(train_codes)} train crops", "steps": config.epochs * config.steps_per_epoch,
               "batch_size": config.batch_size, "train_seconds": study[best]["seconds"],
               "parameters": sum(parameter.numel() for parameter in prior.parameters()),
               "tokenizer_sha1": meta["model_sha1"], "command": COMMAND}
    atomic_write_text(SHIPPED / "quality.json", json.dumps(quality, indent=2) + "\n")
    print(json.dumps(quality, indent=2))


if __name__ == "__main__":
    main()
