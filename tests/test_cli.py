"""The command lines, run as a user runs them: ``python -m revq_core.train`` and ``python -m revq_core.convert``
in a child process, checked for their exit code, the files they write, the line they print, and a one-line
error (no traceback) on bad input."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from revq_core.data.latents import save_latents
from revq_core.modeling.revq import ReVQ

REPO_ROOT = Path(__file__).resolve().parent.parent


def _run(module, *args, cwd):
    """``python -m module args`` in ``cwd`` on one thread (the C++ search kernel off: no build in a fresh child)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "REVQ_CPU_KERNEL": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _one_line_error(result, *fragments):
    """The process failed with a single-line message on stderr that contains every fragment."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _latents(count, seed):
    generator = torch.Generator().manual_seed(seed)
    return 1.0 + 2.0 * torch.randn(count, 32, 8, 8, generator=generator)


def test_train_cli_trains_writes_the_run_and_prints_the_result(tmp_path):
    train_file = save_latents(tmp_path / "train.safetensors", _latents(64, 0))
    val_file = save_latents(tmp_path / "val.safetensors", _latents(16, 1))
    output = tmp_path / "run"
    result = _run("revq_core.train", "--preset", "tiny", "--train-latents", train_file, "--val-latents", val_file,
                  "--threads", "1", "--output", output, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {path.name for path in output.iterdir()} >= {"checkpoint.pt", "history.json", "model"}
    history = json.loads((output / "history.json").read_text())
    assert history["epoch"] == [0, 1]  # the tiny preset: 2 epochs
    printed = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"preset tiny: 2 epochs, validation latent MSE (\d+\.\d{4}) \(quantizer only (\d+\.\d{4})\), "
                         r"codebook usage (\d+\.\d)%; model saved to (.+)/model", printed)
    assert match, printed
    assert float(match.group(1)) == pytest.approx(history["val_mse"][-1], abs=1e-4)
    assert float(match.group(2)) == pytest.approx(history["val_quant_mse"][-1], abs=1e-4)
    assert float(match.group(3)) == pytest.approx(100 * history["usage"][-1], abs=0.05)
    assert Path(match.group(4)) == output
    model = ReVQ.from_pretrained(output / "model")
    assert (model.tokens_per_image, model.codes_per_group) == (64, 16)


def test_train_cli_names_a_missing_latent_file_in_one_line(tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    result = _run("revq_core.train", "--preset", "tiny", "--train-latents", missing, "--threads", "1",
                  "--output", tmp_path / "run", cwd=tmp_path)
    _one_line_error(result, str(missing))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_convert_cli_writes_a_loadable_model_and_prints_what_it_converted(tmp_path):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(512, 4, 4, generator=generator)  # the authors' 512T layout at K = 4, no rectifier
    torch.save({"quantizer": {"embeddings": embeddings, "index_offset": torch.arange(512) * 4,
                              "count": torch.zeros(512, 4)}, "decoder": {}, "epoch": 99}, tmp_path / "ckpt.pth")
    torch.save({"mean": torch.randn(2048, generator=generator), "std": torch.rand(2048, generator=generator) + 0.5},
               tmp_path / "preprocessor.pth")
    result = _run("revq_core.convert", "ckpt.pth", "out", "--preprocessor", "preprocessor.pth", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "converted ckpt.pth: 512 tokens, K = 4, G = 512; saved to out"
    assert {path.name for path in (tmp_path / "out").iterdir()} >= {"config.json", "model.safetensors"}
    model = ReVQ.from_pretrained(tmp_path / "out")
    assert torch.equal(model.quantizer.codebook, embeddings)


def test_convert_cli_names_a_missing_checkpoint_in_one_line(tmp_path):
    result = _run("revq_core.convert", "missing_ckpt.pth", "out", cwd=tmp_path)
    _one_line_error(result, "missing_ckpt.pth")
    assert not (tmp_path / "out").exists()
