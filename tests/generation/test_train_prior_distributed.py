"""Data-parallel prior training: 2 CPU ranks (gloo), interrupted and resumed, give the prior of 1 rank on the same
global batches (up to float summation order)."""
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from revq_core.generation.train_prior import PRIOR_PRESETS, train_prior

CONFIG = PRIOR_PRESETS["tiny"].replace(architecture={"width": 16, "depth": 1, "heads": 2, "score_dim": 8,
                                                     "score_hidden": 8}, epochs=2, batch_size=8, steps_per_epoch=2,
                                       warmup_steps=1, eval_images=8)
META = {"model": "test", "model_sha1": "a" * 40, "tokens_per_image": 8, "codes_per_group": 4,
        "class_names": ["a", "b"]}


def _data():
    generator = torch.Generator().manual_seed(0)
    return (torch.randint(4, (40, 8), generator=generator), torch.randn(8, 4, 2, generator=generator),
            torch.arange(40) % 2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, output_dir: str, result_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        codes, codebooks, labels = _data()
        train_prior(codes, CONFIG, codebooks, META, labels, output_dir=output_dir, stop_after=1, progress=False)
        prior, history = train_prior(codes, CONFIG, codebooks, META, labels, output_dir=output_dir, resume=True,
                                     progress=False)
        torch.save({"state": prior.state_dict(), "bits": history.held_out_bits}, f"{result_path}.rank{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_train_the_prior_of_one(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path / "ddp"), str(tmp_path / "result")), nprocs=2, join=True)
    codes, codebooks, labels = _data()
    single, history = train_prior(codes, CONFIG, codebooks, META, labels, progress=False)
    ranks = [torch.load(tmp_path / f"result.rank{rank}", weights_only=True) for rank in range(2)]
    for key, value in single.state_dict().items():
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert sorted(path.name for path in (tmp_path / "ddp").iterdir()) == ["checkpoint.pt", "history.json", "model"]
