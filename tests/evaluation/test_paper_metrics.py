"""The paper protocol's PSNR (red channel) and SSIM (YIQ luma, 'valid' window): answers derived by hand,
and equality with a straightforward float64 reference of the same definitions written here."""
import math

import pytest
import torch

from revq_core.evaluation.metrics import (paper_psnr, paper_ssim, paper_ssim_window, psnr, round_to_8_bits, to_uint8,
                                          yiq_luma_levels)


def _levels(levels) -> torch.Tensor:
    """8-bit levels (any int tensor of shape (B, 3, H, W)) -> images k / 255 in [0, 1], float32."""
    return torch.as_tensor(levels).float() / 255


def _random_levels(batch=2, height=16, width=19, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), generator=generator)


# ---- PSNR: the red channel only, 8-bit rounding, the 80 dB cap ---------------------------------------------

def test_a_difference_only_in_green_or_blue_leaves_paper_psnr_at_80_db():
    target_levels = _random_levels().clamp(20, 235)
    changed = target_levels.clone()
    changed[:, 1] += 20   # green
    changed[:, 2] -= 20   # blue
    pred, target = _levels(changed), _levels(target_levels)
    assert paper_psnr(pred, target).tolist() == [80.0, 80.0]  # 10 log10(1 / (0 + 1e-8))
    assert psnr(pred, target, "rgb") < 30  # the standard RGB PSNR does see it


def test_a_red_only_difference_is_measured_by_hand():
    target_levels = torch.full((1, 3, 12, 12), 128)
    pred_levels = target_levels.clone()
    pred_levels[:, 0] += 10  # every red value 10 levels up: MSE = (10 / 255)^2
    expected = 10 * math.log10(1 / ((10 / 255) ** 2 + 1e-8))  # = 20 log10(25.5) - a 3e-5 dB eps effect
    assert float(paper_psnr(_levels(pred_levels), _levels(target_levels))) == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx(20 * math.log10(25.5), abs=1e-4)


def test_the_prediction_is_rounded_to_8_bits_first():
    target = _levels(_random_levels().clamp(1, 254))
    under_half_a_level = target + 0.4 / 255  # rounds back onto the target's levels
    over_half_a_level = target + 0.6 / 255   # rounds one level up: MSE (1/255)^2 on red
    assert paper_psnr(under_half_a_level, target).tolist() == [80.0, 80.0]
    assert paper_ssim(under_half_a_level, target).tolist() == [1.0, 1.0]
    one_level = 10 * math.log10(1 / ((1 / 255) ** 2 + 1e-8))  # 48.128 dB: the eps lowers 20 log10(255) by 0.003
    assert paper_psnr(over_half_a_level, target).tolist() == pytest.approx([one_level] * 2, abs=1e-4)
    torch.testing.assert_close(round_to_8_bits(over_half_a_level), target + 1 / 255)
    # values outside [0, 1] are clamped before rounding
    torch.testing.assert_close(round_to_8_bits(torch.tensor([-0.2, 1.3, 0.5 / 255 + 1e-4])),
                               torch.tensor([0.0, 1.0, 1 / 255]))


def test_to_uint8_rounds_instead_of_truncating():
    levels = torch.arange(256).float()
    assert torch.equal(to_uint8(levels / 255), torch.arange(256).to(torch.uint8))  # exact levels unchanged
    assert torch.equal(to_uint8((levels[:-1] + 0.6) / 255), torch.arange(1, 256).to(torch.uint8))
    assert torch.equal(to_uint8((levels + 0.4) / 255).long(), torch.arange(256).clamp(max=255))


# ---- SSIM: YIQ luma in 8-bit levels, 'valid' positions --------------------------------------------------

def test_ssim_of_flat_grey_images_is_the_luminance_term():
    # R = G = B = k gives a luma of exactly k levels; flat images have no variance, so SSIM is the
    # luminance term (2 a b + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 255)^2.
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100 ** 2 + 110 ** 2 + c1)
    score = paper_ssim(_levels(torch.full((1, 3, 16, 16), 110)), _levels(torch.full((1, 3, 16, 16), 100)))
    assert float(score) == pytest.approx(expected, rel=1e-7)  # the float32-stored window sums to 1 within 1e-7
    assert score.dtype == torch.float64


def test_a_colour_change_that_keeps_the_yiq_luma_leaves_paper_ssim_at_one():
    # 299 * 15 - 587 * 9 + 114 * 7 = 0: (+15 R, -9 G, +7 B) levels leave 0.299 R + 0.587 G + 0.114 B unchanged.
    target_levels = _random_levels(2, 16, 16, seed=4).clamp(20, 230)
    exact_times_1000 = 299 * target_levels[:, 0] + 587 * target_levels[:, 1] + 114 * target_levels[:, 2]
    tie = (exact_times_1000 % 1000 == 500).unsqueeze(1).expand_as(target_levels)  # halves: avoid them
    target_levels = torch.where(tie, torch.tensor([100, 120, 80]).view(1, 3, 1, 1), target_levels)
    pred_levels = target_levels + torch.tensor([15, -9, 7]).view(1, 3, 1, 1)
    pred, target = _levels(pred_levels), _levels(target_levels)
    assert torch.equal(yiq_luma_levels(pred), yiq_luma_levels(target))
    assert paper_ssim(pred, target).tolist() == [1.0, 1.0]
    assert paper_psnr(pred, target).tolist() == pytest.approx([20 * math.log10(255 / 15)] * 2, abs=1e-3)


def test_luma_levels_are_the_nearest_integers_of_the_exact_luma():
    levels = torch.randint(0, 256, (1, 3, 200, 1000), generator=torch.Generator().manual_seed(3))
    exact_times_1000 = 299 * levels[:, 0] + 587 * levels[:, 1] + 114 * levels[:, 2]  # integers
    not_a_tie = exact_times_1000 % 1000 != 500  # at exact halves the float rounding decides, as in pyiqa
    nearest = torch.div(exact_times_1000 + 500, 1000, rounding_mode="floor")
    luma = yiq_luma_levels(_levels(levels))[:, 0]
    assert luma.dtype == torch.float64 and not_a_tie.float().mean() > 0.99
    assert torch.equal(luma[not_a_tie], nearest[not_a_tie].double())


def test_only_valid_window_positions_count():
    # On an 11 x 11 image the window fits once: the score is that single position's SSIM (a padded SSIM would
    # average 121 positions). Smaller images have no valid position at all.
    target = _levels(_random_levels(1, 11, 11, seed=1))
    pred = _levels(_random_levels(1, 11, 11, seed=2))
    assert float(paper_ssim(pred, target)) == pytest.approx(_reference_ssim(pred, target)[0], rel=1e-10)
    with pytest.raises(ValueError, match=r"at least 11 x 11 pixels, got \(10, 11\)"):
        paper_ssim(pred[..., :10, :], target[..., :10, :])
    window = paper_ssim_window()
    assert window.shape == (1, 1, 11, 11) and window.dtype == torch.float64
    assert float(window.sum()) == pytest.approx(1.0, abs=1e-7)  # its float32-stored values sum to 1 within 1e-7


# ---- equality with a straightforward float64 reference ---------------------------------------------------

def _reference_psnr(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """PSNR of the red channel, pred rounded to 8 bits, in float64 with Python loops over images."""
    scores = []
    for one_pred, one_target in zip(pred.double(), target.double()):
        red_pred = torch.round(one_pred[0].clamp(0, 1) * 255) / 255
        mse = float(((red_pred - one_target[0].clamp(0, 1)) ** 2).mean())
        scores.append(10 * math.log10(1 / (mse + 1e-8)))
    return scores


def _reference_ssim(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """SSIM of the YIQ luma levels, 11 x 11 Gaussian (sigma 1.5) at each valid position, explicit sums in float64.

    The luma is rounded from float32 values, as the images are float32 tensors in the authors' evaluator, and
    the normalised window's values are stored in float32, as pyiqa stores them.
    """
    offsets = [index - 5 for index in range(11)]
    gaussian = [[math.exp(-(dy * dy + dx * dx) / (2 * 1.5 ** 2)) for dx in offsets] for dy in offsets]
    total = sum(map(sum, gaussian))
    window = torch.tensor([[value / total for value in row] for row in gaussian], dtype=torch.float32).double()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for one_pred, one_target in zip(pred.float(), target.float()):
        one_pred = torch.round(one_pred.clamp(0, 1) * 255) / 255
        lumas = [torch.round((0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]) * 255).double()
                 for image in (one_pred, one_target.clamp(0, 1))]
        height, width = lumas[0].shape
        values = []
        for top in range(height - 10):
            for left in range(width - 10):
                x, y = (luma[top:top + 11, left:left + 11] for luma in lumas)
                mean_x, mean_y = float((window * x).sum()), float((window * y).sum())
                var_x = float((window * x * x).sum()) - mean_x ** 2
                var_y = float((window * y * y).sum()) - mean_y ** 2
                cov = float((window * x * y).sum()) - mean_x * mean_y
                contrast_structure = max(0.0, (2 * cov + c2) / (var_x + var_y + c2))
                values.append((2 * mean_x * mean_y + c1) / (mean_x ** 2 + mean_y ** 2 + c1) * contrast_structure)
        scores.append(sum(values) / len(values))
    return scores


@pytest.mark.parametrize("height, width, noise", [(11, 11, 0.05), (16, 23, 0.02), (24, 17, 0.2)])
def test_equal_to_a_float64_reference(height, width, noise):
    generator = torch.Generator().manual_seed(height * width)
    smooth = torch.nn.functional.interpolate(torch.rand(3, 3, 4, 4, generator=generator), size=(height, width),
                                             mode="bilinear")
    target = round_to_8_bits(smooth)  # originals are 8-bit images
    pred = target + noise * torch.randn(target.shape, generator=generator)  # unrounded, partly outside [0, 1]
    assert paper_psnr(pred, target).tolist() == pytest.approx(_reference_psnr(pred, target), rel=1e-6)
    # The luma is float32 (as in the authors' evaluator): a pixel whose 255 Y lies within float32 rounding of a
    # half may round to either level, as the CPU's kernel for the weighted sum goes (einsum -> BLAS here, three
    # products and two sums in the reference). One level of one pixel moves the score by ~2e-6 relative (seen on
    # an Intel AVX-512 CPU for (16, 23)); a wrong window, constant or clip would move it by orders more.
    assert paper_ssim(pred, target).tolist() == pytest.approx(_reference_ssim(pred, target), rel=1e-5, abs=1e-12)
    assert paper_psnr(target, target).tolist() == [80.0] * 3
    assert paper_ssim(target, target).tolist() == pytest.approx([1.0] * 3, abs=1e-12)


def test_anticorrelated_structure_is_clipped_at_zero():
    # An inverted image has a negative local covariance everywhere: the contrast-structure term is clipped at 0,
    # so the SSIM is 0 (not negative) wherever the texture dominates C2.
    target = round_to_8_bits(torch.rand(1, 3, 13, 13, generator=torch.Generator().manual_seed(5)))
    inverted = 1 - target
    score = float(paper_ssim(inverted, target))
    assert 0.0 <= score < 0.01
    assert score == pytest.approx(_reference_ssim(inverted, target)[0], abs=1e-12)


def test_bad_inputs_raise_one_line_errors():
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(TypeError, match="divide by 255"):
        paper_psnr(to_uint8(images), to_uint8(images))
    with pytest.raises(ValueError, match=r"same shape"):
        paper_ssim(images, images[:1])
    with pytest.raises(ValueError, match="permute"):
        paper_psnr(images.permute(0, 2, 3, 1), images.permute(0, 2, 3, 1))


def test_the_fast_window_filter_equals_float64_conv2d():
    # paper_ssim filters with a rank-1 split of the window plus a float32 residual (speed only): on 8-bit levels,
    # their squares and their products it must give float64 conv2d's numbers up to summation order.
    from revq_core.evaluation.metrics import ValidWindowFilter

    window = paper_ssim_window()
    generator = torch.Generator().manual_seed(4)
    levels = torch.randint(0, 256, (2, 2, 1, 40, 37), generator=generator).double()
    for values in (levels[0], levels[0] ** 2, levels[0] * levels[1]):
        expected = torch.nn.functional.conv2d(values, window)
        assert torch.allclose(ValidWindowFilter(window)(values), expected, rtol=1e-13, atol=0)
