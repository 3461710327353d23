"""No training run is lost: an earlier run is never overwritten silently, two runs never share a directory,
files are written atomically, killed writes leave no temporaries behind, and resume checks the data."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from revq_core.data.latents import save_latents
from revq_core.modeling.revq import ReVQ
from revq_core.train import main
from revq_core.training import trainer as train_module
from revq_core.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from revq_core.training.config import preset
from revq_core.training.run_dir import RunDirectoryError, RunDirectoryLocked, claim_run_directory
from revq_core.training.trainer import TrainingDiverged, train


def _latents(count, seed):
    generator = torch.Generator().manual_seed(seed)
    return 1.0 + 2.0 * torch.randn(count, 32, 8, 8, generator=generator)


TRAIN, VAL = _latents(64, 0), _latents(16, 1)
CONFIG = preset("tiny", epochs=2)


def _half_run(output_dir, **kwargs):
    """One of CONFIG's two epochs, as an interrupted or time-limited run leaves its directory."""
    return train(CONFIG, kwargs.pop("train_latents", TRAIN), VAL, output_dir=output_dir, stop_after=1,
                 progress=False, **kwargs)


def _write_lock(directory, pid, host=None):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".lock").write_text(f"{pid} {host or socket.gethostname()}\n")


def _finished_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: the pid names no process any more
    return process.pid


# 1. an earlier run is refused unless resumed or explicitly overwritten

def test_an_earlier_run_is_refused_without_resume_or_overwrite(tmp_path):
    _half_run(tmp_path)
    checkpoint = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(RunDirectoryError, match=r"already holds a training run \(checkpoint.pt, history.json\): "
                                                r"pass resume=True .*overwrite=True .*fresh output_dir"):
        train(CONFIG, TRAIN, VAL, output_dir=tmp_path, progress=False)
    assert issubclass(RunDirectoryError, FileExistsError)
    assert (tmp_path / "checkpoint.pt").read_bytes() == checkpoint
    assert not (tmp_path / ".lock").exists()
    with pytest.raises(ValueError, match="pass only one"):
        train(CONFIG, TRAIN, VAL, output_dir=tmp_path, resume=True, overwrite=True, progress=False)


def test_overwrite_deletes_the_earlier_run_and_starts_over(tmp_path):
    train(CONFIG, TRAIN, VAL, output_dir=tmp_path, progress=False)  # a finished run: checkpoint, history, model
    assert (tmp_path / "model").is_dir()
    _, history = _half_run(tmp_path, overwrite=True)
    assert history.epoch == [0]  # started over, not resumed (that would run epoch 1 only)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 0
    assert json.loads((tmp_path / "history.json").read_text())["epoch"] == [0]
    assert not (tmp_path / "model").exists()  # the old run's model does not sit beside the new run


def test_resume_starts_fresh_without_a_checkpoint_but_keeps_other_runs_files(tmp_path):
    _, history = _half_run(tmp_path / "new", resume=True)
    assert history.epoch == [0]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "history.json").write_text("{}")
    with pytest.raises(RunDirectoryError, match="holds history.json of an earlier run but no checkpoint.pt"):
        _half_run(tmp_path / "old", resume=True)


def test_resume_with_another_config_names_the_differences(tmp_path):
    _half_run(tmp_path)
    with pytest.raises(CheckpointError, match=r"another configuration \(reset_ratio: checkpoint 0.2 vs now 0.5\)"):
        train(preset("tiny", epochs=2, reset_ratio=0.5), TRAIN, VAL, output_dir=tmp_path, resume=True,
              progress=False)
    assert not (tmp_path / ".lock").exists()


def test_cli_needs_resume_or_overwrite_for_an_existing_run(tmp_path, capsys):
    latents_file = save_latents(tmp_path / "train.safetensors", TRAIN)
    arguments = ["--preset", "tiny", "--epochs", "1", "--train-latents", str(latents_file),
                 "--output", str(tmp_path / "run")]
    main(arguments)
    assert "model saved to" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main(arguments)
    message = str(refused.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert "already holds a training run" in message and "--resume" in message and "--overwrite" in message
    main(arguments + ["--resume"])
    main(arguments + ["--overwrite"])
    with pytest.raises(SystemExit):  # argparse: not allowed together
        main(arguments + ["--resume", "--overwrite"])


# 2. one run per directory: the lock

def test_a_live_process_lock_refuses_a_second_run(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write_lock(tmp_path, sleeper.pid)
        (tmp_path / ".checkpoint.pt.abc.tmp").write_bytes(b"being written by the live run")
        with pytest.raises(RunDirectoryLocked, match=rf"{tmp_path} is in use by process {sleeper.pid} on this host"):
            _half_run(tmp_path)
        assert (tmp_path / ".lock").read_text().split()[0] == str(sleeper.pid)  # its lock is left alone
        assert (tmp_path / ".checkpoint.pt.abc.tmp").exists()  # and so are its files
        assert not (tmp_path / "checkpoint.pt").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lock_from_another_host_is_refused(tmp_path):
    _write_lock(tmp_path, 4242, host="elsewhere")
    with pytest.raises(RunDirectoryLocked, match="in use by process 4242 on host elsewhere .*delete .*lock"):
        _half_run(tmp_path)


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path):
    dead_pid = _finished_pid()
    _write_lock(tmp_path, dead_pid)
    with pytest.warns(UserWarning, match=rf"taking over the stale lock of process {dead_pid}"):
        _half_run(tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 0
    assert not (tmp_path / ".lock").exists()
    # a lock with this process's own pid that this process does not hold (a restarted container) is stale too
    _write_lock(tmp_path, os.getpid())
    with pytest.warns(UserWarning, match="stale lock"):
        train(CONFIG, TRAIN, VAL, output_dir=tmp_path, resume=True, progress=False)


def test_the_lock_is_held_while_training_and_released_after_return_and_raise(tmp_path, monkeypatch):
    seen = []
    original_reset = train_module.end_of_epoch

    def reset_that_looks_at_the_lock(*args):
        seen.append((tmp_path / ".lock").read_text().split())
        with pytest.raises(RunDirectoryLocked, match="another train\\(\\) call of this process"):
            claim_run_directory(tmp_path, resume=True, overwrite=False)
        return original_reset(*args)

    monkeypatch.setattr(train_module, "end_of_epoch", reset_that_looks_at_the_lock)
    _half_run(tmp_path)
    assert seen == [[str(os.getpid()), socket.gethostname()]]
    assert not (tmp_path / ".lock").exists()

    original_forward = ReVQ.forward
    monkeypatch.setattr(ReVQ, "forward", lambda self, latent: original_forward(self, latent)._replace(
        loss=torch.tensor(float("nan"))))
    with pytest.raises(TrainingDiverged):
        train(CONFIG, TRAIN, VAL, output_dir=tmp_path, resume=True, progress=False)
    assert not (tmp_path / ".lock").exists()


# 3. history.json is written atomically

def test_a_failed_history_write_keeps_the_previous_history_and_no_temporary(tmp_path, monkeypatch):
    _half_run(tmp_path)
    previous = (tmp_path / "history.json").read_text()
    real_replace = os.replace

    def replace_failing_for_history(source, destination):
        if os.path.basename(destination) == "history.json":
            raise OSError("No space left on device (simulated)")
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace_failing_for_history)
    with pytest.raises(OSError, match="simulated"):
        train(CONFIG, TRAIN, VAL, output_dir=tmp_path, resume=True, progress=False)
    assert (tmp_path / "history.json").read_text() == previous
    assert json.loads(previous)["epoch"] == [0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint.pt", "history.json"]


# 4. temporaries of killed writes are deleted when the next run starts

def test_stale_temporaries_are_deleted_at_the_start_of_a_run(tmp_path):
    _half_run(tmp_path)
    stale = [tmp_path / ".checkpoint.pt.k1ll3d.tmp", tmp_path / ".history.json.x7q.tmp"]
    unrelated = [tmp_path / ".model.json.tmp", tmp_path / "notes.txt"]
    for path in stale + unrelated:
        path.write_bytes(b"x" * 100)
    train(CONFIG, TRAIN, VAL, output_dir=tmp_path, resume=True, progress=False)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in unrelated)


# 5. resume checks that the training data and VAE are the checkpoint's

def test_resume_on_other_latents_or_another_vae_is_refused(tmp_path):
    _half_run(tmp_path, vae="vae-a")
    with pytest.raises(CheckpointError, match=r"trained on other data \(normalizer statistics differ\)"):
        _half_run(tmp_path, vae="vae-a", train_latents=_latents(64, 7), resume=True)
    with pytest.raises(CheckpointError, match=r"number of latents: checkpoint 64 vs now 48; normalizer statistics"):
        _half_run(tmp_path, vae="vae-a", train_latents=TRAIN[:48], resume=True)
    with pytest.raises(CheckpointError, match=r"\(vae: checkpoint 'vae-a' vs now 'vae-b'\)"):
        _half_run(tmp_path, vae="vae-b", resume=True)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 0  # untouched by the refused calls
    _, history = train(CONFIG, TRAIN.clone(), VAL, output_dir=tmp_path, vae="vae-a", resume=True, progress=False)
    assert history.epoch == [0, 1]


def test_a_checkpoint_without_data_fingerprint_is_refused(tmp_path):
    _half_run(tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["data"]  # no fingerprint: nothing to check these latents against
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="holds no training-data fingerprint"):
        train(CONFIG, TRAIN, VAL, output_dir=tmp_path, resume=True, progress=False)


def test_a_checkpoint_written_before_a_config_field_existed_resumes_exactly(tmp_path):
    """Checkpoints of the version before the quantizer registry hold no ``quantizer`` / ``commitment_weight`` in
    their recipe: those compare at their defaults (what that version did), and resuming gives the weights of an
    uninterrupted run bit for bit. A recipe whose value differs from the default is still refused."""
    whole, _ = train(CONFIG, TRAIN, VAL, progress=False)
    _half_run(tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    for added in ("quantizer", "commitment_weight"):
        del state["config"][added]
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    resumed, history = train(CONFIG, TRAIN, VAL, output_dir=tmp_path, resume=True, progress=False)
    assert history.epoch == [0, 1]
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    with pytest.raises(CheckpointError, match="commitment_weight: checkpoint 0.25 vs now 0.5"):
        train(CONFIG.replace(commitment_weight=0.5), TRAIN, VAL, output_dir=tmp_path, resume=True, progress=False)
