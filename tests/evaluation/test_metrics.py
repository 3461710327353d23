"""Tests for revq_core.evaluation.metrics: known values, input checks and the offline errors.

LPIPS and rFID need pretrained backbones that are never downloaded here: their plumbing is tested
with the real networks at random weights where torchvision and torch-fidelity import (tests marked so
are skipped elsewhere). The accumulator (``protocol.Evaluator``) is tested in test_evaluate.py.
"""
import importlib
import math

import pytest
import torch

from revq_core.evaluation import metrics
from revq_core.evaluation.metrics import (PSNR_CAP_DB, FeatureMoments, MissingDependencyError, MissingWeightsError,
                                          find_weights, frechet_distance, inception_network, lpips_network, psnr,
                                          rgb_to_y, round_to_8_bits, ssim, to_uint8, to_unit_range)


def _importable(module):
    try:
        importlib.import_module(module)
        return True
    except Exception:  # ImportError, or RuntimeError from a torchvision that does not match torch
        return False


HAS_TORCHVISION = _importable("torchvision")
HAS_TORCH_FIDELITY = _importable("torch_fidelity")


def _pair(batch=4, size=32, noise=0.05, seed=0):
    """A smooth random image batch and a noisy copy, both (B, 3, size, size) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.nn.functional.interpolate(torch.rand(batch, 3, 8, 8, generator=gen), size=size, mode="bilinear")
    pred = (target + noise * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    return pred, target


# ---- PSNR, SSIM, luma -------------------------------------------------------------------------------

@pytest.mark.parametrize("channel", ["rgb", "y"])
def test_identical_images_psnr_is_capped_and_ssim_is_one(channel):
    _, target = _pair()
    assert psnr(target, target.clone(), channel) == PSNR_CAP_DB
    assert ssim(target, target.clone(), channel) == pytest.approx(1.0, abs=1e-6)


def test_psnr_known_value_uniform_error():
    target = torch.full((2, 3, 16, 16), 0.5)
    pred = target + 0.1  # MSE 0.01 -> 20 dB on RGB
    assert psnr(pred, target, "rgb") == pytest.approx(20.0, abs=1e-4)
    # Luma difference is 0.1 * 219/255 (the studio-swing scale), so PSNR-Y = 20 - 20 log10(219/255).
    assert psnr(pred, target, "y") == pytest.approx(20.0 - 20 * math.log10(219 / 255), abs=1e-4)


def test_psnr_is_mean_of_per_image_psnr():
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[0] += 0.1   # 20 dB
    pred[1] += 0.01  # 40 dB
    assert psnr(pred, target, "rgb") == pytest.approx(30.0, abs=1e-3)  # the pooled MSE would give ~23 dB


@pytest.mark.parametrize("rgb, expected_y", [
    ((1.0, 1.0, 1.0), 235 / 255), ((0.0, 0.0, 0.0), 16 / 255), ((1.0, 0.0, 0.0), (16 + 65.481) / 255),
    ((0.0, 1.0, 0.0), (16 + 128.553) / 255), ((0.0, 0.0, 1.0), (16 + 24.966) / 255),
])
def test_rgb_to_y_matches_bt601_studio_swing(rgb, expected_y):
    images = torch.tensor(rgb).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    y = rgb_to_y(images)
    assert y.shape == (2, 1, 4, 5)
    torch.testing.assert_close(y, torch.full_like(y, expected_y))


def test_colour_only_change_moves_rgb_scores_but_not_y():
    _, target = _pair(noise=0.0)
    target = 0.25 + 0.5 * target  # keep room for the change below inside [0, 1]
    # A change along (128.553, -65.481, 0) leaves the luma 65.481 R + 128.553 G + 24.966 B unchanged.
    direction = torch.tensor([128.553, -65.481, 0.0]) / 144.27
    pattern = torch.sign(torch.randn(target.shape[0], 1, *target.shape[2:], generator=torch.Generator().manual_seed(1)))
    pred = target + 0.1 * direction.view(1, 3, 1, 1) * pattern
    assert psnr(pred, target, "y") == PSNR_CAP_DB
    assert psnr(pred, target, "rgb") < 30.0
    assert ssim(pred, target, "y") == pytest.approx(1.0, abs=1e-5)
    assert ssim(pred, target, "rgb") < 0.99


def test_accepts_minus_one_to_one_inputs():
    pred, target = _pair()
    for channel in ("rgb", "y"):
        for metric in (psnr, ssim):
            in_minus_one_to_one = metric(2 * pred - 1, 2 * target - 1, channel, value_range=(-1, 1))
            assert in_minus_one_to_one == pytest.approx(metric(pred, target, channel))
    torch.testing.assert_close(to_unit_range(torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.5])),
                               torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))  # overshoot is clamped


@pytest.mark.parametrize("pred_shape, target_shape, message", [
    ((2, 3, 16, 16), (2, 3, 16, 8), "same shape"),
    ((2, 16, 16, 3), (2, 16, 16, 3), "permute"),
    ((3, 16, 16), (3, 16, 16), "unsqueeze"),
    ((2, 1, 16, 16), (2, 1, 16, 16), r"\(B, 3, H, W\)"),
])
def test_bad_shapes_raise_value_error(pred_shape, target_shape, message):
    with pytest.raises(ValueError, match=message):
        psnr(torch.rand(pred_shape), torch.rand(target_shape))


def test_nan_and_bad_inputs_raise():
    pred, target = _pair()
    pred[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"pred contains 1 NaN/Inf value\(s\) \(first at index \[1, 2, 3, 4\]\)"):
        ssim(pred, target)
    with pytest.raises(TypeError, match="divide by 255"):
        psnr(to_uint8(target), to_uint8(target))
    with pytest.raises(ValueError, match='"rgb" or "y"'):
        psnr(target, target, channel="ycbcr")


# ---- weights files and optional packages ----------------------------------------------------------

def test_missing_weights_message_names_file_and_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / metrics.INCEPTION_WEIGHTS
    with pytest.raises(MissingWeightsError) as err:
        inception_network()
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and "\n" not in message
    assert str(expected) in message and f"$TORCH_HOME/hub/checkpoints/{metrics.INCEPTION_WEIGHTS}" in message
    assert "rfid_weights=" in message
    with pytest.raises(MissingWeightsError, match=metrics.ALEXNET_WEIGHTS):
        lpips_network()
    with pytest.raises(MissingWeightsError, match=f"not found at {tmp_path / 'nope.pth'}.*lpips_weights="):
        lpips_network(lpips_weights=tmp_path / "nope.pth")


def test_weights_found_in_torch_home_or_explicit_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "w.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert find_weights("w.pth") == cached
    assert find_weights("other.pth", path=cached) == cached


@pytest.mark.skipif(HAS_TORCHVISION, reason="torchvision imports here")
def test_lpips_without_torchvision_says_how_to_install():
    with pytest.raises(MissingDependencyError, match="LPIPS needs torchvision.*pip install torchvision==0.28.0"):
        lpips_network(pretrained_backbone=False)


@pytest.mark.skipif(HAS_TORCH_FIDELITY, reason="torch-fidelity imports here")
def test_rfid_without_torch_fidelity_says_how_to_install(tmp_path):
    weights = tmp_path / metrics.INCEPTION_WEIGHTS
    weights.write_bytes(b"")
    with pytest.raises(MissingDependencyError, match="rFID needs torch_fidelity.*pip install torch-fidelity"):
        inception_network(rfid_weights=weights)


# ---- torchmetrics' real networks at random weights (where torchvision / torch-fidelity import) -----

@pytest.mark.skipif(not HAS_TORCHVISION, reason="needs an importable torchvision")
def test_lpips_network_plumbing_with_random_backbone(tmp_path):
    import torchvision

    pred, target = _pair(batch=2, size=64, noise=0.2)
    net = lpips_network(pretrained_backbone=False)
    distances = net(2 * pred - 1, 2 * target - 1)
    assert distances.shape == (2, 1, 1, 1) and torch.isfinite(distances).all() and (distances > 0).all()
    assert float(net(2 * target - 1, 2 * target - 1).abs().max()) < 1e-6

    alexnet = torchvision.models.alexnet(weights=None)
    weights = tmp_path / metrics.ALEXNET_WEIGHTS
    torch.save(alexnet.state_dict(), weights)
    loaded = lpips_network(lpips_weights=weights)
    torch.testing.assert_close(loaded.net.slice5.get_submodule("10").weight, alexnet.features[10].weight)
    from revq_core.evaluation.protocol import Evaluator, perceptual_networks

    lpips_net, _, missing = perceptual_networks(inception=False, lpips_weights=weights)  # the accumulator's LPIPS
    assert "lpips" not in missing
    evaluator = Evaluator(("revq",), lpips=lpips_net)
    evaluator.update(target, {"revq": pred})
    expected = float(loaded(2 * round_to_8_bits(pred) - 1, 2 * target - 1).mean())  # on 8-bit reconstructions
    assert evaluator.compute()["protocols"]["paper"]["revq"]["lpips"] == pytest.approx(expected, rel=1e-5)

    torch.save({"conv.weight": torch.zeros(1)}, weights)
    with pytest.raises(ValueError, match="not torchvision's AlexNet"):
        lpips_network(lpips_weights=weights)


@pytest.mark.skipif(not HAS_TORCH_FIDELITY, reason="needs an importable torch-fidelity")
def test_rfid_plumbing_with_random_inception(tmp_path, monkeypatch):
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity

    # Build torch-fidelity's Inception-v3 at random weights (no download) and save them as the weights file.
    with monkeypatch.context() as patch:
        patch.setattr(fidelity, "load_state_dict_from_url", lambda *args, **kwargs: None)
        patch.setattr(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *args, **kwargs: None)
        torch.manual_seed(0)
        random_inception = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / metrics.INCEPTION_WEIGHTS
    torch.save(random_inception.state_dict(), weights)

    # The first 64 features: the 2048-d Frechet distance takes ~40 s on a CPU (an eigendecomposition of 2048 x 2048).
    pred, target = _pair(batch=4, size=64, noise=0.2)
    network = inception_network(weights)
    moments = {}
    for name, images in (("target", target), ("pred", pred)):
        features, logits = network(to_uint8(images))
        assert features.shape == (4, 2048) and logits.shape == (4, 1008)
        moments[name] = FeatureMoments()
        moments[name].add(features[:, :64])
    assert abs(frechet_distance(moments["target"], moments["target"])) < 1e-3
    distance = frechet_distance(moments["target"], moments["pred"])
    assert math.isfinite(distance) and distance > 0


# ---- known values from an independent implementation (scikit-image) and by hand ---------------------------

def _luma(images):
    """BT.601 studio-swing luma written out, (B, 3, H, W) float64 numpy -> (B, H, W)."""
    return 16 / 255 + (65.481 * images[:, 0] + 128.553 * images[:, 1] + 24.966 * images[:, 2]) / 255


def _skimage_ssim(pred, target):
    """scikit-image's SSIM of one image (C, H, W) numpy with torchmetrics' settings: Gaussian window sigma 1.5
    (11 x 11), data_range 1, population (co)variances, averaged over every pixel position. torchmetrics pads
    each image by 5 pixels in mode "reflect" (edge not repeated) and averages the SSIM map over all H x W
    positions; scikit-image drops a 5-pixel border of its map instead, so the images are padded first with
    numpy's "reflect" (the same padding) and scikit-image's border falls exactly on the padding."""
    import numpy as np
    from skimage.metrics import structural_similarity

    pad = ((0, 0), (5, 5), (5, 5))
    return structural_similarity(np.pad(target, pad, mode="reflect"), np.pad(pred, pad, mode="reflect"),
                                 data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=0)


@pytest.mark.parametrize("size, noise, seed", [((32, 32), 0.05, 0), ((32, 32), 0.3, 1), ((24, 40), None, 2)])
def test_ssim_equals_scikit_image(size, noise, seed):
    """Per-image SSIM on RGB (mean of the channels) and on Y against scikit-image, for smooth images with mild
    or strong noise and for two unrelated uniform-noise images (SSIM near 0)."""
    import numpy as np

    pytest.importorskip("skimage")
    if noise is None:
        gen = torch.Generator().manual_seed(seed)
        pred, target = torch.rand(3, 3, *size, generator=gen), torch.rand(3, 3, *size, generator=gen)
    else:
        pred, target = _pair(batch=3, size=size[0], noise=noise, seed=seed)
    pred_np, target_np = pred.double().numpy(), target.double().numpy()
    expected_rgb = [_skimage_ssim(p, t) for p, t in zip(pred_np, target_np)]
    expected_y = [_skimage_ssim(p[None], t[None]) for p, t in zip(_luma(pred_np), _luma(target_np))]
    assert metrics.ssim_per_image(pred, target, "rgb").tolist() == pytest.approx(expected_rgb, abs=2e-5)
    assert metrics.ssim_per_image(pred, target, "y").tolist() == pytest.approx(expected_y, abs=2e-5)
    assert ssim(pred, target, "rgb") == pytest.approx(float(np.mean(expected_rgb)), abs=2e-5)
    assert max(expected_rgb) < 0.99 and min(expected_rgb) > -0.5  # neither trivial (1) nor degenerate


def test_psnr_equals_a_hand_computed_value():
    """Per-image PSNR = 10 log10(1 / MSE) with MSE over all channels and pixels (data range 1), on RGB and
    on Y, then the mean over images; computed here in float64 numpy for noisy image pairs."""
    import numpy as np

    pred, target = _pair(batch=4, size=16, noise=0.1, seed=3)
    pred_np, target_np = pred.double().numpy(), target.double().numpy()
    rgb_mse = ((pred_np - target_np) ** 2).mean(axis=(1, 2, 3))
    y_mse = ((_luma(pred_np) - _luma(target_np)) ** 2).mean(axis=(1, 2))
    assert metrics.psnr_per_image(pred, target, "rgb").tolist() == pytest.approx(10 * np.log10(1 / rgb_mse), abs=1e-4)
    assert metrics.psnr_per_image(pred, target, "y").tolist() == pytest.approx(10 * np.log10(1 / y_mse), abs=1e-4)
    assert psnr(pred, target, "rgb") == pytest.approx(float(np.mean(10 * np.log10(1 / rgb_mse))), abs=1e-4)
