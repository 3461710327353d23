import json
import math

import pytest
import torch

from revq_core.checkpoint import CheckpointError, load_checkpoint
from revq_core.model import ReVQ
from revq_core.train import PRESETS, TrainingDiverged, preset, train


def _clustered_latents(count, seed):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, 32, 8, 8, generator=torch.Generator().manual_seed(99))
    picks = torch.randint(0, 8, (count,), generator=generator)
    return 2.0 + 3.0 * (centres[picks] + 0.3 * torch.randn(count, 32, 8, 8, generator=generator))


@pytest.fixture(scope="module")
def data():
    return _clustered_latents(256, 0), _clustered_latents(64, 1)


def test_presets_follow_the_paper_recipe():
    paper = PRESETS["paper_512T"]
    assert (paper.tokens_per_image, paper.codes_per_group, paper.rectifier_width, paper.rectifier_depth) == (512, 16384, 512, 3)
    assert (paper.epochs, paper.batch_size, paper.quantizer_lr, paper.rectifier_lr_ratio, paper.seed) == (100, 256, 1e-2, 0.05, 42)
    assert PRESETS["paper_256T_262k"].batch_size == 128 and PRESETS["paper_256T_65k"].codes_per_group == 65536
    with pytest.raises(ValueError, match="unknown preset"):
        preset("paper_1024T")


def test_loss_falls_and_history_is_complete(data, tmp_path):
    train_latents, val_latents = data
    config = preset("tiny", epochs=5)
    model, history = train(config, train_latents, val_latents, output_dir=tmp_path, progress=False)
    assert all(later < earlier for earlier, later in zip(history.train_loss, history.train_loss[1:]))
    assert history.train_loss[-1] < 0.9 * history.train_loss[0]
    assert all(later < earlier for earlier, later in zip(history.val_mse, history.val_mse[1:]))
    gamma = 0.05 ** (1 / 5)
    assert history.lr_quantizer == pytest.approx([1e-2 * gamma**epoch for epoch in range(5)])
    assert history.lr_rectifier == pytest.approx([5e-4 * gamma**epoch for epoch in range(5)])
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["val_mse"] == pytest.approx(history.val_mse)
    assert isinstance(ReVQ.from_pretrained(tmp_path / "model"), ReVQ)


def test_optimizer_groups_follow_the_recipe(data, tmp_path):
    train_latents, val_latents = data
    train(preset("tiny", epochs=1), train_latents, val_latents, output_dir=tmp_path, progress=False)
    groups = load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"]
    assert [group["weight_decay"] for group in groups] == [0.0, 1e-4]
    assert [group["initial_lr"] for group in groups] == pytest.approx([1e-2, 5e-4])
    assert len(groups[0]["params"]) == 1  # the codebook alone


def test_resume_equals_an_uninterrupted_run(data, tmp_path):
    train_latents, val_latents = data
    config = preset("tiny", epochs=3)
    straight, straight_history = train(config, train_latents, val_latents, output_dir=tmp_path / "a", progress=False)
    train(config, train_latents, val_latents, output_dir=tmp_path / "b", stop_after=1, progress=False)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 0
    resumed, resumed_history = train(config, train_latents, val_latents, output_dir=tmp_path / "b", resume=True,
                                     progress=False)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert resumed_history.val_mse == straight_history.val_mse


def test_same_seed_same_weights_other_seed_other_weights(data):
    train_latents, val_latents = data
    first, _ = train(preset("tiny", epochs=1), train_latents, val_latents, progress=False)
    second, _ = train(preset("tiny", epochs=1), train_latents, val_latents, progress=False)
    third, _ = train(preset("tiny", epochs=1, seed=1), train_latents, val_latents, progress=False)
    assert torch.equal(first.quantizer.codebook, second.quantizer.codebook)
    assert not torch.equal(first.quantizer.codebook, third.quantizer.codebook)


def test_reset_keeps_codebooks_in_use(data):
    # N(0, 1) codebooks in D = 32 against clustered data: most codes are never selected without reset.
    train_latents, _ = data
    _, with_reset = train(preset("tiny", epochs=4, init="random"), train_latents, None, progress=False)
    _, without_reset = train(preset("tiny", epochs=4, init="random", reset=False), train_latents, None, progress=False)
    assert with_reset.codes_reset[0] > 0 and without_reset.codes_reset == [0, 0, 0, 0]
    assert with_reset.usage[-1] > without_reset.usage[-1] + 0.15
    assert all(math.isnan(value) for value in with_reset.val_mse)


def test_nan_loss_stops_training_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch):
    train_latents, val_latents = data
    config = preset("tiny", epochs=3)
    train(config, train_latents, val_latents, output_dir=tmp_path, stop_after=1, progress=False)
    good = (tmp_path / "checkpoint.pt").read_bytes()
    original_forward = ReVQ.forward

    def exploding_forward(self, latent):
        output = original_forward(self, latent)
        return output._replace(loss=output.loss * float("nan"))

    monkeypatch.setattr(ReVQ, "forward", exploding_forward)
    with pytest.raises(TrainingDiverged, match=r"loss became nan .*at epoch 1, step 0; .*last good checkpoint .*checkpoint.pt is intact"):
        train(config, train_latents, val_latents, output_dir=tmp_path, resume=True, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


def test_bad_inputs_and_checkpoints_are_explained(data, tmp_path):
    train_latents, val_latents = data
    with pytest.raises(ValueError, match="train_latents has per-sample shape"):
        train(preset("tiny"), train_latents[:, :16], val_latents, progress=False)
    poisoned = train_latents.clone()
    poisoned[100, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="train_latents contains 1 NaN/Inf"):
        train(preset("tiny"), poisoned, val_latents, progress=False)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(preset("tiny"), train_latents[:8], val_latents, progress=False)
    train(preset("tiny", epochs=2), train_latents, val_latents, output_dir=tmp_path, stop_after=1, progress=False)
    with pytest.raises(CheckpointError, match="codes_per_group: checkpoint 16 vs now 32"):
        train(preset("tiny", epochs=2, codes_per_group=32), train_latents, val_latents, output_dir=tmp_path,
              resume=True, progress=False)
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        train(preset("tiny", epochs=2), train_latents, val_latents, output_dir=tmp_path, resume=True, progress=False)


def test_in_place_codebook_gradient_trains_exactly_like_index_select(data, monkeypatch):
    """train() on the CPU adds the codebook gradient into one kept tensor (Quantizer.codebook_grad = "rows");
    the weights after training must equal those of the plain path (fresh dense gradients) bit for bit."""
    from revq_core import quantizer as quantizer_module
    from revq_core.quantizer import Quantizer

    train_latents, val_latents = data
    config = preset("tiny", epochs=2)
    calls = []
    apply = quantizer_module._CodebookRows.apply
    with monkeypatch.context() as patch:  # count the lookups that take the in-place path
        patch.setattr(quantizer_module._CodebookRows, "apply", lambda *args: calls.append(args[2].codebook_grad) or apply(*args))
        in_place, _ = train(config, train_latents, val_latents, progress=False)
    assert calls == ["rows"] * (2 * (256 // config.batch_size)) and not in_place.quantizer.codebook.grad.is_sparse
    assert in_place.quantizer.codebook_grad == "fresh"  # the plain mode again on the returned model
    with monkeypatch.context() as patch:  # the plain path: the attribute reads "fresh" whatever train() sets
        patch.setattr(Quantizer, "codebook_grad", property(lambda self: "fresh", lambda self, value: None),
                      raising=False)
        plain, _ = train(config, train_latents, val_latents, progress=False)
        assert plain.quantizer.codebook_grad == "fresh"
    for (name, a), (_, b) in zip(in_place.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name
