"""TrainConfig's speed settings (fused AdamW, bf16 autocast) change only the last bits, never the recipe."""
import torch

from revq_core.training.config import preset
from revq_core.training.trainer import train


def _latents(count, seed):
    return 1.0 + 2.0 * torch.randn(count, 32, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_fused_adamw_matches_the_default_step_within_float_tolerance():
    plain, plain_history = train(preset("tiny", epochs=1), _latents(64, 0), None, progress=False)
    fused, fused_history = train(preset("tiny", epochs=1, fused_adamw=True), _latents(64, 0), None, progress=False)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert fused_history.usage == plain_history.usage
    assert preset("tiny", fused_adamw=True, autocast_bf16=True).recipe_dict() == preset("tiny").recipe_dict()


def test_bf16_autocast_trains():
    _, history = train(preset("tiny", epochs=2, autocast_bf16=True), _latents(64, 0), _latents(16, 1), progress=False)
    assert history.val_mse[-1] < history.val_mse[0]


def test_speed_settings_per_device():
    from revq_core.training.config import TrainConfig, speed_settings

    assert speed_settings("cpu") == {}  # the CPU keeps bit-identical results
    cuda = speed_settings("cuda:0")
    assert cuda["compile_rectifier"] == "reduce-overhead" and cuda["autocast_bf16"] and cuda["fused_adamw"]
    config = preset("paper_512T", device="cuda", **cuda)
    assert isinstance(config, TrainConfig) and config.recipe_dict() == preset("paper_512T").recipe_dict()
