import copy
import json
import math

import pytest
import torch

from revq_core.modeling.config import ModelConfig
from revq_core.modeling.revq import ReVQ
from revq_core.paper import plots
from revq_core.training.checkpoint import CheckpointError, load_checkpoint
from revq_core.training.config import PRESETS, preset
from revq_core.training.trainer import TrainingDiverged, build_model, optimizer_and_scheduler, optimizer_step, train


def _clustered_latents(count, seed):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, 32, 8, 8, generator=torch.Generator().manual_seed(99))
    picks = torch.randint(0, 8, (count,), generator=generator)
    return 2.0 + 3.0 * (centres[picks] + 0.3 * torch.randn(count, 32, 8, 8, generator=generator))


@pytest.fixture(scope="module")
def data():
    return _clustered_latents(256, 0), _clustered_latents(64, 1)


# The paper's three settings, written out from the paper (section 4.1 "Experimental Detail", appendix C.2
# "Configurations") and the authors' released configs (configs/<T>T_NC=<K>.yaml and scripts/train.py of
# github.com/Neur-IO/ReVQ). Where the two disagree the released configs win: section 4.1 gives batch 128 at
# 512 tokens, appendix C.2 and the released 512T config 256.
PAPER_RECIPE = dict(
    epochs=100,  # section 4.1, appendix C.2 "Epoch: 100"
    quantizer_lr=1e-2,  # appendix C.2 "Base LR: 1e-2"; released configs "lr: 0.01"
    rectifier_lr_ratio=0.05,  # section 4.1 (decoder lr a fixed fraction of the quantizer's); train.py "lr * 0.05"
    rectifier_weight_decay=1e-4,  # appendix C.2 "Decoder Weight Decay: 1e-4"
    betas=(0.9, 0.999),  # appendix C.2 "Beta1: 0.9", "Beta2: 0.999"
    final_lr_fraction=0.05,  # ExponentialLR, train.py gamma = 0.05 ** (1 / num_epochs)
    grad_clip=1.0,  # train.py: clip_grad_norm_(max_norm=1) for the quantizer, then for the decoder
    reset=True, reset_ratio=0.2, reset_noise=0.1,  # section 3.2.2 reset; their Quantizer's defaults 0.2, 0.1
    init="samples",  # codebooks start as copies of training tokens (their prepare_codebook(method="random"))
    seed=42,  # released configs "seed: 42"
    split="channel", rectifier="vit", rectifier_residual=False, pre_encoder=None, latent_shape=(32, 8, 8),
)
PAPER_SETTINGS = {  # (T tokens, K codes per group, G groups, batch size, rectifier width, rectifier depth)
    "paper_512T": (512, 16384, 512, 256, 512, 3),  # 512T_NC=16384.yaml; appendix C.2
    "paper_256T_65k": (256, 65536, 256, 256, 1024, 4),  # 256T_NC=65536.yaml; section 4.1 (batch 256)
    "paper_256T_262k": (256, 262144, 256, 128, 512, 4),  # 256T_NC=262144.yaml; section 4.1 (batch 128)
}


@pytest.mark.parametrize("name", sorted(PAPER_SETTINGS))
def test_paper_presets_equal_the_papers_numbers(name):
    config = PRESETS[name]
    tokens, codes, groups, batch, _, _ = PAPER_SETTINGS[name]
    for field_name, value in PAPER_RECIPE.items():
        got = getattr(config.model if field_name in ModelConfig.field_names() else config, field_name)
        assert (tuple(got) if isinstance(got, (tuple, list)) else got) == value, field_name
    assert (config.model.tokens_per_image, config.model.codes_per_group, config.batch_size) == (tokens, codes, batch)
    assert config.model.num_groups in (None, groups)  # None: one codebook per token position, G = T
    assert build_model(preset(name, codes_per_group=2, rectifier="identity")).quantizer.num_groups == groups
    with pytest.raises(ValueError, match="unknown preset"):
        preset("paper_1024T")


@pytest.mark.parametrize("name", ["paper_512T", "paper_256T_65k", "paper_256T_262k"])
def test_paper_presets_rectifier_size(name):
    config = PRESETS[name]
    assert (config.model.rectifier_width, config.model.rectifier_depth) == PAPER_SETTINGS[name][4:]


def test_the_optimizer_takes_the_recipes_numbers(data):
    """AdamW's two groups as the authors build them: quantizer (lr, weight decay 0), rectifier (0.05 lr, 1e-4)."""
    config = preset("tiny")
    optimizer, scheduler = optimizer_and_scheduler(build_model(config), config)
    quantizer_group, rectifier_group = optimizer.param_groups
    assert (quantizer_group["lr"], quantizer_group["weight_decay"]) == (1e-2, 0.0)
    assert quantizer_group["betas"] == (0.9, 0.999)
    assert rectifier_group["lr"] == pytest.approx(5e-4) and rectifier_group["weight_decay"] == 1e-4
    assert rectifier_group["betas"] == (0.9, 0.999)
    assert scheduler.gamma == pytest.approx(0.05 ** (1 / config.epochs))


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
    """train() on the CPU sets ops.codebook_grad.InPlaceCodebookGrad up through the quantizer's prepare_training
    ("rows": the codebook gradient added into one kept tensor); the weights after training must equal those of
    the plain path bit for bit."""
    from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer
    from revq_core.ops import codebook_grad

    train_latents, val_latents = data
    config = preset("tiny", epochs=2)
    calls = []
    lookup = codebook_grad.InPlaceCodebookGrad.lookup
    with monkeypatch.context() as patch:  # count the lookups that take the in-place path
        patch.setattr(codebook_grad.InPlaceCodebookGrad, "lookup",
                      lambda self, rows: calls.append(self.mode) or lookup(self, rows))
        in_place, _ = train(config, train_latents, val_latents, progress=False)
    assert calls == ["rows"] * (2 * (256 // config.batch_size))
    assert in_place.quantizer.codebook.grad is None  # train() drops its gradients before returning
    assert in_place.quantizer.in_place_grad is None  # the plain lookup again on the returned model
    with monkeypatch.context() as patch:  # the plain path: nothing installed
        patch.setattr(MultiGroupQuantizer, "prepare_training", lambda quantizer, device, distributed=False: None)
        plain, _ = train(config, train_latents, val_latents, progress=False)
    for (name, a), (_, b) in zip(in_place.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name


def _scaled_step_gradients(model, config, latent, loss_scale):
    """(unclipped, clipped) gradients of one ``optimizer_step`` whose loss is scaled by ``loss_scale``:
    each a (quantizer list, rectifier list); the clipped ones are what ``optimizer.step`` receives."""
    reference = copy.deepcopy(model)  # plain autograd gradients (the in-place "rows" mode fills .grad itself)
    reference.quantizer.finish_training()
    reference_params = list(reference.quantizer.parameters()) + [
        p for name, p in reference.named_parameters() if not name.startswith("quantizer.")]
    unclipped = torch.autograd.grad(loss_scale * reference(latent).loss, reference_params)
    optimizer, _ = optimizer_and_scheduler(model, config)
    quantizer_params, rectifier_params = model.parameter_groups()
    model.quantizer.end_epoch(reset=False)  # usage counts back to zero
    output = model(latent)  # a training-mode forward counts its codes
    output = output._replace(loss=loss_scale * output.loss)
    received = []  # the gradients optimizer.step sees, in place of its update
    optimizer.step = lambda *args, **kwargs: received.extend(p.grad.clone()
                                                             for p in quantizer_params + rectifier_params)
    optimizer_step(output, optimizer, model.quantizer, rectifier_params, config.grad_clip)
    assert int(model.quantizer.code_usage.counts.sum()) == latent.shape[0] * config.model.tokens_per_image
    split = len(quantizer_params)
    return (list(unclipped[:split]), list(unclipped[split:])), (received[:split], received[split:])


def _norm(gradients):
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradients])))


@pytest.mark.parametrize("in_place", [False, True])
def test_gradient_norms_are_clipped_per_group(data, in_place):
    """``optimizer_step`` clips the quantizer's and the rectifier's gradients separately at grad_clip, as the
    authors do (clip_grad_norm_ on quantizer.parameters(), then on decoder.parameters()). A loss scaled by 1e4
    pushes both groups far above 1.0 (here ~180 and ~9000): each must arrive at the optimizer with norm
    grad_clip, along its own unclipped direction. Clipping both together would scale both by the same factor
    (the quantizer's would end near 0.02), not clipping would leave them at their unclipped norms; gradients
    under the limit pass unchanged."""
    train_latents, _ = data
    config = preset("tiny")
    model = build_model(config)
    if in_place:  # as train() on the CPU
        model.quantizer.prepare_training(torch.device("cpu"))
    model.normalizer.fit(train_latents)
    latent = model.normalizer.normalize(train_latents[:config.batch_size])

    (quantizer_raw, rectifier_raw), (quantizer_clipped, rectifier_clipped) = _scaled_step_gradients(
        model, config, latent, loss_scale=1e4)
    raw_norms = _norm(quantizer_raw), _norm(rectifier_raw)
    assert min(raw_norms) > 100 * config.grad_clip
    for raw, clipped, raw_norm in ((quantizer_raw, quantizer_clipped, raw_norms[0]),
                                   (rectifier_raw, rectifier_clipped, raw_norms[1])):
        assert _norm(clipped) == pytest.approx(config.grad_clip, rel=1e-4)
        for before, after in zip(raw, clipped):
            torch.testing.assert_close(after, before * (config.grad_clip / raw_norm), rtol=1e-4, atol=1e-9)

    (quantizer_raw, rectifier_raw), (quantizer_clipped, rectifier_clipped) = _scaled_step_gradients(
        model, config, latent, loss_scale=1e-3)
    assert max(_norm(quantizer_raw), _norm(rectifier_raw)) < config.grad_clip
    for before, after in zip(quantizer_raw + rectifier_raw, quantizer_clipped + rectifier_clipped):
        torch.testing.assert_close(after, before, rtol=1e-5, atol=0)


def test_runs_dir_follows_revq_runs_dir(tmp_path, monkeypatch):
    """Notebooks write their runs to ``plots.runs_dir()``: the test session points it at a fresh temporary
    folder (top-level conftest.py), so ``pytest --nbval`` trains notebook 05 instead of resuming a
    checkpoint left in <repo>/runs by an earlier run."""
    session_runs = plots.runs_dir()
    assert session_runs != plots.REPO_ROOT / "runs" and plots.REPO_ROOT not in session_runs.parents
    monkeypatch.setenv("REVQ_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert plots.runs_dir() == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()
    monkeypatch.delenv("REVQ_RUNS_DIR")
    assert plots.runs_dir() == plots.REPO_ROOT / "runs"
