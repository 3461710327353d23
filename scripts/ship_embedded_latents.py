"""Make the shipped latents of the embedded photo crops: ``data/embedded_latents/latents_v2_<split>-<i>of<n>.safetensors``.

    .venv/bin/python scripts/ship_embedded_latents.py

Encodes the default train / val / test crops of the corpus v2 with the embedded VAE v2 (float32, as
``embedded_latents(..., shipped=False)`` does; its cache under ``.cache/`` is reused when present) and
writes them rounded to float16, at most 4096 latents (16 MiB) a file, each with the record
``embedded_latents`` checks before it uses them (the VAE's weight digest, the crops' key). Run it again whenever the VAE v2 or the photo corpus changes:
until then ``embedded_latents`` ignores the stale files and encodes, and tests/data/test_shipped_latents.py
fails. Takes 2-3 minutes on 2 CPU cores.
"""
from __future__ import annotations

import torch

from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE
from revq_core.data.latents import (SHIPPED_LATENTS_PER_FILE, _embedded_vae_digest, embedded_latents, save_latents,
                                    shipped_latents_path, shipped_latents_paths, shipped_latents_record)
from revq_core.data.photos import CORPUS_CROPS

SPLITS = ("train", "val", "test")


def main() -> None:
    vae_digest = _embedded_vae_digest(DEFAULT_EMBEDDED_VAE)
    for split in SPLITS:
        latents = embedded_latents(split, shipped=False)
        record = shipped_latents_record(split, CORPUS_CROPS["v2"].num_crops[split], 0, DEFAULT_EMBEDDED_VAE, vae_digest)
        if latents.abs().max() > torch.finfo(torch.float16).max:
            raise SystemExit(f"{split}: a latent exceeds float16's range; ship float32 instead.")
        rounded = latents.half()
        error = (rounded.float() - latents).abs()
        normal = latents.abs() >= torch.finfo(torch.float16).tiny  # below it float16 keeps fewer digits
        relative = (error[normal] / latents.abs()[normal]).max().item()
        for stale in shipped_latents_paths(split):
            stale.unlink()
        parts = rounded.split(SHIPPED_LATENTS_PER_FILE)
        paths = [save_latents(shipped_latents_path(split, index, len(parts)), part,
                              {**record, "dtype": "float16, rounded from the encoder's float32"})
                 for index, part in enumerate(parts)]
        print(f"{split}: {tuple(latents.shape)} -> {len(paths)} file(s) in {paths[0].parent} "
              f"({sum(path.stat().st_size for path in paths) / 2**20:.1f} MiB), "
              f"rounding error: relative {relative:.2e} at most (float16 normals), "
              f"absolute {error.max().item():.2e} at most")


if __name__ == "__main__":
    main()
