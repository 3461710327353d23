"""Data-parallel training: 2 CPU ranks (gloo), interrupted and resumed, give the same model as 1 rank
on the same global batch."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from revq_core.training.config import preset
from revq_core.training.trainer import train
from revq_core.utils import distributed

WORLD_SIZE = 2


def _latents(count, seed):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 32, 8, 8, generator=torch.Generator().manual_seed(99))
    picks = torch.randint(0, 4, (count,), generator=generator)
    return 1.0 + 2.0 * (centres[picks] + 0.3 * torch.randn(count, 32, 8, 8, generator=generator))


def _config():
    return preset("tiny", epochs=2, batch_size=16)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, output_dir: str, result_path: str) -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        # one epoch, then resume to the end: every rank reads rank 0's checkpoint
        train(_config(), _latents(48, 0), _latents(20, 1), output_dir=output_dir, stop_after=1, progress=False)
        model, history = train(_config(), _latents(48, 0), _latents(20, 1), output_dir=output_dir, resume=True,
                               progress=False)
        torch.save({"state": model.state_dict(), "history": history.to_dict()}, f"{result_path}.rank{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_train_the_same_model_as_one(tmp_path):
    port = _free_port()
    mp.spawn(_worker, args=(port, str(tmp_path / "ddp"), str(tmp_path / "result")), nprocs=WORLD_SIZE, join=True)
    single, single_history = train(_config(), _latents(48, 0), _latents(20, 1), output_dir=tmp_path / "single",
                                   progress=False)
    ranks = [torch.load(tmp_path / f"result.rank{rank}", weights_only=True) for rank in range(WORLD_SIZE)]
    for key, value in single.state_dict().items():
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), f"ranks differ in {key}"
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    history = ranks[0]["history"]
    assert history["usage"] == single_history.usage and history["codes_reset"] == single_history.codes_reset
    assert history["train_loss"] == pytest.approx(single_history.train_loss, rel=1e-5)
    assert history["val_mse"] == pytest.approx(single_history.val_mse, rel=1e-5)
    # rank 0 alone wrote the run's files, as a single process would have
    assert sorted(path.name for path in (tmp_path / "ddp").iterdir()) == ["checkpoint.pt", "history.json", "model"]


def test_batch_must_split_evenly_over_ranks():
    with pytest.raises(ValueError, match="batch_size 30 is not a multiple of the world size 4"):
        distributed.check_divides_batch(30, 4)
    ids = torch.arange(8)
    assert torch.equal(distributed.shard_of_batch(ids, 8), ids)  # one process: the whole batch
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
