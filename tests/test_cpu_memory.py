"""glibc keeps freed memory (revq_core.utils.cpu_memory): an encode no longer page-faults its activations in again."""
import json
import os
import subprocess
import sys

import pytest

from revq_core.utils.cpu_memory import keep_freed_memory

# One process, both ways: glibc's default first (REVQ_KEEP_FREED_MEMORY=0 at the import), then after
# keep_freed_memory(); each two warm-up encodes (the heap grows to its working size; on some machines
# a second encode still grew it by ~10 MiB, 2.4 k faults) and then the fewest faults of three encodes
# (a steady state: glibc's default trims on every encode, ~10 k faults each on AMD Zen 3 and Zen 4).
PROBE = """
import json, os, resource, torch
import revq_core
from revq_core.autoencoders.adapters import encode
from revq_core.autoencoders.loading import load_vae
from revq_core.utils.cpu_memory import keep_freed_memory
vae = load_vae("embedded-v2")
crops = torch.rand(8, 3, 128, 128) * 2 - 1

def faults_of_an_encode():
    encode(vae, crops, 8)
    encode(vae, crops, 8)
    faults = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        encode(vae, crops, 8)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return min(faults)

returned = faults_of_an_encode()
os.environ["REVQ_KEEP_FREED_MEMORY"] = "1"
assert keep_freed_memory()
print(json.dumps({"returned": returned, "kept": faults_of_an_encode()}))
"""


def _page_faults_of_an_encode() -> dict[str, int]:
    environment = dict(os.environ, REVQ_KEEP_FREED_MEMORY="0")
    finished = subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return json.loads(finished.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_an_encode_page_faults_far_less_with_freed_memory_kept():
    faults = _page_faults_of_an_encode()
    kept, returned = faults["kept"], faults["returned"]
    assert returned > 2000, f"glibc returned no memory to the kernel ({returned} faults): the probe tests nothing"
    assert kept < returned / 10, (kept, returned)


def test_a_bad_setting_is_named(monkeypatch):
    monkeypatch.setenv("REVQ_KEEP_FREED_MEMORY", "yes")
    with pytest.raises(ValueError, match="REVQ_KEEP_FREED_MEMORY must be 0 or 1"):
        keep_freed_memory()


def test_switched_off_it_does_nothing(monkeypatch):
    monkeypatch.setenv("REVQ_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
