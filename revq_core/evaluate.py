"""Evaluate a tokenizer on an image folder from the command line (the library is ``revq_core.evaluation``).

    python -m revq_core.evaluate --model runs/512T/model --vae mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers \\
        --data /path/to/imagenet/val --with-vae --output results.json
    torchrun --nproc_per_node=8 -m revq_core.evaluate ...     # each rank evaluates a shard; the sums are reduced

What is computed, and how (the paper's protocol and the standard one): ``revq_core/evaluation/protocol.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from revq_core.evaluation.metrics import ALEXNET_WEIGHTS, INCEPTION_WEIGHTS, MissingWeightsError, find_weights
from revq_core.evaluation.protocol import (PROTOCOL_KEYS, PROTOCOLS, SHARED_DESCRIPTION, SHARED_KEYS,
                                           evaluate_image_folder, format_scores, sha256_of_file, software_versions,
                                           weights_hashes)
from revq_core.modeling.loading import check_model_vae, load_model
from revq_core.utils import distributed
from revq_core.utils.checks import run_cli
from revq_core.utils.files import atomic_write_text, check_output_file


def _cli_hint(reason: str) -> str:
    """The missing-metric reason with the command-line option beside the keyword argument it names."""
    return reason.replace("lpips_weights=", "--lpips-weights / lpips_weights=").replace(
        "rfid_weights=", "--rfid-weights / rfid_weights=")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m revq_core.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="directory written by ReVQ.save_pretrained, or a hub id; also the authors' "
                                        "released models by hub id (AndyRaoTHU/revq-512T, ...) or a local copy of one")
    parser.add_argument("--preprocessor", help="the authors' preprocessor.pth (path or URL) for their models; default: "
                                               "the one in their repository")
    parser.add_argument("--vae", help="VAE directory or hub id; default: the one the model records, else the "
                                      "embedded VAE v2 ('embedded-v2'; 'embedded' is the first one)")
    parser.add_argument("--data", required=True, help="image folder, e.g. <imagenet>/val (val/<class>/<image>)")
    parser.add_argument("--protocol", choices=["paper", "standard", "both"], default="both")
    parser.add_argument("--limit", type=int, help="only the first N images of the sorted folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--image-size", type=int, help="default: latent side x VAE factor (256 for DC-AE f32)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default="results.json", help="where the JSON goes (default: results.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--force", action="store_true",
                        help="evaluate the model with a --vae other than the one it records")
    parser.add_argument("--with-vae", action="store_true",
                        help="also score the VAE alone (its ceiling) in the same pass")
    parser.add_argument("--vae-only", action="store_true", help="score the VAE alone; no --model needed")
    parser.add_argument("--lpips-weights", help=f"path of {ALEXNET_WEIGHTS} (default: $TORCH_HOME/hub/checkpoints/)")
    parser.add_argument("--rfid-weights",
                        help=f"path of {INCEPTION_WEIGHTS} (default: $TORCH_HOME/hub/checkpoints/)")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    parser.add_argument("--no-inception", action="store_true", help="skip rFID and the Inception Score")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """The command line: evaluate, print the tables and the missing metrics, write the JSON (rank 0)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is None and not args.vae_only:
        parser.error("pass --model <directory or hub id>, or --vae-only to score the VAE alone.")
    from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE
    from revq_core.autoencoders.loading import load_vae

    check_output_file(args.output, args.overwrite, inputs=[args.data], option="--output")  # before the work
    device = distributed.init_from_env(args.device)
    try:
        model = None if args.vae_only else load_model(args.model, args.preprocessor)
        if model is not None:
            check_model_vae(model, args.vae, args.force)
        vae_name = args.vae or (model.vae_name if model is not None else None) or DEFAULT_EMBEDDED_VAE
        vae = load_vae(vae_name, device=device)
        protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
        results = evaluate_image_folder(args.data, vae, model, include_vae=args.with_vae, protocols=protocols,
                                        image_size=args.image_size, limit=args.limit, batch_size=args.batch_size,
                                        num_workers=args.num_workers, device=device, lpips=not args.no_lpips,
                                        inception=not args.no_inception, lpips_weights=args.lpips_weights,
                                        rfid_weights=args.rfid_weights, progress=not args.no_progress)
        if distributed.is_main_process():
            results["data"] = str(Path(args.data).resolve())
            results["weights_sha256"] = {"vae": weights_hashes(vae_name, "vae")}
            if model is not None:
                results["model"] = args.model
                results["weights_sha256"]["model"] = weights_hashes(args.model, "model")
            results["vae"] = vae_name
            for metric, filename, path in (("lpips", ALEXNET_WEIGHTS, args.lpips_weights),
                                           ("rfid", INCEPTION_WEIGHTS, args.rfid_weights)):
                if metric not in results["missing_metrics"]:
                    try:
                        results["weights_sha256"][metric] = {filename: sha256_of_file(find_weights(filename, path))}
                    except MissingWeightsError:  # a stand-in network: no file
                        pass
            results["software"] = software_versions()
            arguments = sys.argv[1:] if argv is None else argv
            results["command"] = " ".join([Path(sys.executable).name, "-m", "revq_core.evaluate", *arguments])
            for protocol, block in results["protocols"].items():  # a table per protocol, headed by its name
                print(f"{protocol} protocol ({results['num_images']} images): {block['description']}")
                print(format_scores(block["metrics"], PROTOCOL_KEYS[protocol] + SHARED_KEYS))
            print(f"shared: {SHARED_DESCRIPTION}")
            by_reason = {}
            for metric, reason in results["missing_metrics"].items():
                by_reason.setdefault(reason, []).append(metric)
            for reason, metrics in by_reason.items():
                print(f"{' and '.join(metrics)} not computed: {_cli_hint(reason)}")
            if results["skipped_files"]:
                print(f"skipped {len(results['skipped_files'])} unreadable file(s): "
                      + ", ".join(item["path"] for item in results["skipped_files"]))
            output = Path(args.output)
            atomic_write_text(output, json.dumps(results, indent=2) + "\n")
            print(f"wrote {output}")
        distributed.barrier()
    finally:
        distributed.destroy()
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main, None))
