"""glibc keeping freed memory or not (``revq_core.utils.cpu_memory``): the embedded VAE's encoder, interleaved.

    .venv/bin/python benchmarks/cpu_memory.py                  # 1024 val crops, batch 16, 2 rounds
    .venv/bin/python benchmarks/cpu_memory.py --crops 256 --rounds 3

Each run is a fresh process (``REVQ_KEEP_FREED_MEMORY=1``: freed memory kept, the default; ``=0``: glibc's
default, blocks returned to the kernel) that encodes a warm-up batch, then the crops; it reports milliseconds a
crop, user and system seconds and minor page faults of the timed part. Runs alternate, so a change of the
machine's speed hits both alike. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROBE = """
import json, resource, sys, time
from revq_core.autoencoders.adapters import encode
from revq_core.autoencoders.loading import load_vae
from revq_core.data.photos import build_photo_dataset
crops, batch_size = int(sys.argv[1]), int(sys.argv[2])
vae = load_vae("embedded-v2")
images = build_photo_dataset("val")[:crops]
encode(vae, images[:2 * batch_size], batch_size)
before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
encode(vae, images, batch_size)
seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"ms_per_crop": 1e3 * seconds / crops, "user_s": after.ru_utime - before.ru_utime,
                  "system_s": after.ru_stime - before.ru_stime, "page_faults": after.ru_minflt - before.ru_minflt}))
"""


def run(setting: str, crops: int, batch_size: int) -> dict:
    finished = subprocess.run([sys.executable, "-c", PROBE, str(crops), str(batch_size)], capture_output=True,
                              text=True, env=dict(os.environ, REVQ_KEEP_FREED_MEMORY=setting))
    if finished.returncode != 0:
        sys.exit(f"the probe failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    results = {"1": [], "0": []}
    for _ in range(args.rounds):
        for setting in ("1", "0"):
            result = run(setting, args.crops, args.batch_size)
            results[setting].append(result)
            name = "kept    " if setting == "1" else "returned"
            print(f"freed memory {name}: {result['ms_per_crop']:6.2f} ms a crop, user {result['user_s']:5.1f} s, "
                  f"system {result['system_s']:4.1f} s, {result['page_faults']:9d} page faults", flush=True)
    kept = min(result["ms_per_crop"] for result in results["1"])
    returned = min(result["ms_per_crop"] for result in results["0"])
    print(f"best of {args.rounds}: returned / kept = {returned / kept:.2f}x time a crop")


if __name__ == "__main__":
    main()
