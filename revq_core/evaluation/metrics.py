"""Reconstruction metrics as the paper reports them: PSNR, SSIM, LPIPS, rFID and the Inception Score.

Images are batches of shape (B, 3, H, W), RGB, with values in [0, 1] (pass ``value_range=(-1, 1)``
for decoder outputs in [-1, 1]). Values outside the range are clamped first, as the authors'
evaluator does. Every score is a mean over images of the per-image score (PSNR too: the mean of
per-image PSNRs, not the PSNR of the pooled MSE).

- PSNR and SSIM are torchmetrics' (``data_range=1.0``; SSIM with its 11x11 Gaussian window, sigma 1.5,
  reflect padding), on RGB or on the BT.601 luma ``rgb_to_y``: the "standard" protocol. They
  are computed here with the same operations as torchmetrics (tested equal), because importing
  torchmetrics fails whenever torch-fidelity is installed without a working torchvision.
- LPIPS is torchmetrics' copy of LPIPS v0.1, AlexNet variant, on inputs mapped to [-1, 1]. Its
  linear heads ship inside torchmetrics; the AlexNet backbone is torchvision's ImageNet weights,
  read from a local file.
- rFID and the Inception Score use torch-fidelity's Inception-v3 (the pt_inception-2015-12-05 weights,
  2048-d pool features, TF1-style bilinear resize to 299: the standard FID protocol), read from a local
  file: ``inception_network`` gives the features and logits, and ``FeatureMoments`` /
  ``frechet_distance`` / ``inception_score`` turn sums over images into rFID and IS, so the shards of a
  streamed, sharded evaluation combine exactly.

The paper's own numbers come from another computation, reproduced by ``paper_psnr`` and ``paper_ssim``
(the "paper" protocol; the functions above are the "standard" one). Read plainly, **the paper's PSNR is
the PSNR of the red channel alone** and **its SSIM is the SSIM of the YIQ luma** (0.299 R + 0.587 G +
0.114 B, in 8-bit levels, 'valid' window positions only), both on reconstructions rounded to 8 bits.
This follows the authors' evaluation script, which pins pyiqa 0.1.13: its "PSNR" asks pyiqa for a
Y-channel PSNR in colour space "rgb", for which pyiqa converts nothing and keeps channel 0. BT.601
luma PSNR (``psnr(..., channel="y")``) is a few dB higher on the same images, so only ``paper_psnr``
numbers may be set beside the paper's.

Nothing here downloads. A missing weights file raises ``MissingWeightsError`` naming the file and
where to put it; a missing or broken torchvision / torch-fidelity / torchmetrics raises
``MissingDependencyError`` saying how to install it, when LPIPS or rFID is asked for (they are
imported then, not with this module). PSNR and SSIM need none of them.

These are the functions; the accumulator over many batches, both protocols at once, is
``revq_core.evaluation.protocol.Evaluator``::

    evaluator = Evaluator(("revq",), lpips=lpips_network(), inception=inception_network())
    for originals, reconstructions in batches:   # each (B, 3, H, W) in [0, 1]
        evaluator.update(originals, {"revq": reconstructions})
    evaluator.compute()   # {'protocols': {'paper': {'revq': {'psnr': ..., 'ssim': ..., 'lpips': ..., ...}}, ...}, ...}
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from revq_core.utils.checks import first_line

PSNR_CAP_DB = 80.0  # PSNR of identical images; the authors' evaluator (pyiqa) adds 1e-8 to the MSE, capping at 80 dB

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet (ImageNet), the LPIPS backbone
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception-v3
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS

# BT.601 "studio swing" luma, as MATLAB's rgb2ycbcr: Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255.
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_Y_OFFSET = 16.0 / 255.0


class MissingWeightsError(FileNotFoundError):
    """A pretrained backbone's weights file is not on disk (nothing here downloads)."""


class MissingDependencyError(ImportError):
    """An optional package (torchvision, torch-fidelity) is missing or fails to import."""


# ---------------------------------------------------------------------------------------------------
# Inputs


def check_images(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Check that pred and target are finite float image batches of one shape (B, 3, H, W)."""
    for name, images in (("pred", pred), ("target", target)):
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}.")
        if images.ndim != 4 or images.shape[1] != 3:
            hint = ""
            if images.ndim == 4 and images.shape[-1] == 3:
                hint = " Channels-last? Use .permute(0, 3, 1, 2)."
            elif images.ndim == 3 and images.shape[0] == 3:
                hint = " A single image? Use .unsqueeze(0)."
            raise ValueError(f"{name} must have shape (B, 3, H, W), a batch of RGB images, "
                             f"got {tuple(images.shape)}.{hint}")
        if not images.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1] (or [-1, 1] with "
                            f"value_range=(-1, 1)), got dtype {images.dtype}; for uint8 images divide by 255.")
        finite = torch.isfinite(images)
        if not bool(finite.all()):
            raise ValueError(f"{name} contains {int((~finite).sum())} NaN/Inf value(s) (first at index "
                             f"{(~finite).nonzero()[0].tolist()}); metrics of such images are meaningless.")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}.")


def to_unit_range(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Map images with values in ``value_range`` linearly to [0, 1], clamping what lies outside.

    (B, C, H, W) -> (B, C, H, W). The default maps decoder outputs in [-1, 1]; ``(0, 1)`` only clamps.
    """
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}.")
    return ((images - low) / (high - low)).clamp(0.0, 1.0)


def rgb_to_y(images: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB images in [0, 1]: (B, 3, H, W) -> (B, 1, H, W), values in [16/255, 235/255].

    The ITU-R BT.601 "studio swing" Y of MATLAB's ``rgb2ycbcr``, the variant super-resolution
    papers (and BasicSR) use for PSNR-Y: Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}.")
    weights = torch.tensor(_Y_WEIGHTS, dtype=images.dtype, device=images.device)
    return torch.einsum("bchw,c->bhw", images, weights).unsqueeze(1) + _Y_OFFSET  # (B, 1, H, W)


def _prepare(pred, target, channel: str, value_range) -> tuple[torch.Tensor, torch.Tensor]:
    """Check, map to [0, 1] and pick the channel: (B, 3, H, W) -> (B, 3 or 1, H, W), float32 or float64."""
    if channel not in ("rgb", "y"):
        raise ValueError(f'channel must be "rgb" or "y" (BT.601 luma), got {channel!r}.')
    check_images(pred, target)
    pred, target = to_unit_range(pred, value_range), to_unit_range(target, value_range)
    if pred.dtype not in (torch.float32, torch.float64):  # half precision is too coarse for PSNR above ~40 dB
        pred, target = pred.float(), target.float()
    if channel == "y":
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    return pred, target


# ---------------------------------------------------------------------------------------------------
# PSNR and SSIM

SSIM_WINDOW = 11  # Gaussian window side, as int(3.5 * sigma + 0.5) * 2 + 1 for sigma = 1.5 (torchmetrics)
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _psnr_db(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image pair in [0, 1]: (B, C, H, W) x 2 -> (B,); inf for identical images.

    torchmetrics' ``peak_signal_noise_ratio(data_range=1.0, reduction="none", dim=(1, 2, 3))``, same operations.
    """
    difference = pred - target
    mean_squared_error = torch.sum(difference * difference, dim=(1, 2, 3)) / pred[0].numel()  # (B,)
    return -torch.log(mean_squared_error) * (10 / torch.log(torch.tensor(10.0)))


def _ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each image pair in [0, 1]: (B, C, H, W) x 2 -> (B,), the mean over channels and pixels.

    torchmetrics' ``structural_similarity_index_measure(data_range=1.0, reduction="none")``, same operations:
    an 11 x 11 Gaussian window (sigma 1.5) applied per channel to reflect-padded images, so the SSIM map
    has every pixel (H x W) and its mean is the score.
    """
    batch, channels = pred.shape[:2]
    pad = (SSIM_WINDOW - 1) // 2
    pred = F.pad(pred, (pad, pad, pad, pad), mode="reflect")
    target = F.pad(target, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.arange(start=(1 - SSIM_WINDOW) / 2, end=(1 + SSIM_WINDOW) / 2, step=1, dtype=pred.dtype,
                           device=pred.device)
    gaussian = torch.exp(-torch.pow(offsets / SSIM_SIGMA, 2) / 2)
    gaussian = (gaussian / gaussian.sum()).unsqueeze(0)  # (1, 11)
    window = torch.matmul(gaussian.t(), gaussian).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)
    inputs = torch.cat((pred, target, pred * pred, target * target, pred * target))  # (5B, C, H + 10, W + 10)
    mean_pred, mean_target, mean_pred_sq, mean_target_sq, mean_cross = \
        F.conv2d(inputs, window, groups=channels).split(batch)  # each (B, C, H, W): local means
    mu_pred_sq, mu_target_sq, mu_pred_target = mean_pred.pow(2), mean_target.pow(2), mean_pred * mean_target
    sigma_pred_sq = torch.clamp(mean_pred_sq - mu_pred_sq, min=0.0)
    sigma_target_sq = torch.clamp(mean_target_sq - mu_target_sq, min=0.0)
    sigma_pred_target = mean_cross - mu_pred_target
    data_range = 1.0  # images in [0, 1]
    c1, c2 = pow(SSIM_K1 * data_range, 2), pow(SSIM_K2 * data_range, 2)
    upper = 2 * sigma_pred_target + c2
    lower = (sigma_pred_sq + sigma_target_sq) + c2
    ssim_map = ((2 * mu_pred_target + c1) * upper) / ((mu_pred_sq + mu_target_sq + c1) * lower)  # (B, C, H, W)
    return ssim_map.reshape(batch, -1).mean(-1)


def psnr_per_image(pred, target, channel: str = "y", value_range=(0.0, 1.0)) -> torch.Tensor:
    """PSNR in dB of each image: (B, 3, H, W) x 2 -> (B,), capped at ``PSNR_CAP_DB`` (identical images)."""
    pred, target = _prepare(pred, target, channel, value_range)
    return _psnr_db(pred, target).clamp(max=PSNR_CAP_DB)


def ssim_per_image(pred, target, channel: str = "y", value_range=(0.0, 1.0)) -> torch.Tensor:
    """SSIM of each image: (B, 3, H, W) x 2 -> (B,). On RGB, the mean of the three channels' SSIMs."""
    pred, target = _prepare(pred, target, channel, value_range)
    if min(pred.shape[-2:]) <= (SSIM_WINDOW - 1) // 2:
        raise ValueError(f"SSIM's {SSIM_WINDOW} x {SSIM_WINDOW} window needs images of at least "
                         f"{(SSIM_WINDOW + 1) // 2} x {(SSIM_WINDOW + 1) // 2} pixels, got {tuple(pred.shape[-2:])}.")
    return _ssim(pred, target)


def psnr(pred, target, channel: str = "y", value_range=(0.0, 1.0)) -> float:
    """Mean over the batch of per-image PSNR (dB) between pred and target, both (B, 3, H, W).

    channel "y" (default; BT.601 luma) or "rgb"; the paper's own PSNR is ``paper_psnr``. Identical images
    score ``PSNR_CAP_DB`` (80 dB) rather than inf, so one perfect image cannot make a dataset mean infinite.
    """
    return float(psnr_per_image(pred, target, channel, value_range).mean())


def ssim(pred, target, channel: str = "y", value_range=(0.0, 1.0)) -> float:
    """Mean over the batch of per-image SSIM between pred and target, both (B, 3, H, W)."""
    return float(ssim_per_image(pred, target, channel, value_range).mean())


# ---------------------------------------------------------------------------------------------------
# The paper's protocol: the authors' PSNR (red channel) and SSIM (YIQ luma)

PAPER_PSNR_EPS = 1e-8  # added to the MSE before the division, so identical images score 10 log10(1e8) = 80 dB
PAPER_SSIM_LEVELS = 255.0  # the luma is compared in 8-bit levels, so SSIM's constants use a data range of 255
_YIQ_LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # Y of NTSC YIQ (the BT.601 luma weights, full range, no offset)


def round_to_8_bits(images: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the nearest of the 256 levels of an 8-bit image: ``round(x * 255) / 255``.

    (B, C, H, W) -> same shape and dtype. ``torch.round`` rounds halves to even. This is what the
    authors' evaluation script does to each reconstruction before any metric sees it.
    """
    return torch.round(images.clamp(0.0, 1.0) * 255.0) / 255.0


def _paper_inputs(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check both batches; return float32 (pred rounded to 8 bits, target clamped to [0, 1]), (B, 3, H, W) each.

    float32 because the authors' images are float32 tensors: the luma rounding then falls the same way as theirs.
    """
    check_images(pred, target)
    return round_to_8_bits(pred.float()), target.float().clamp(0.0, 1.0)


def paper_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's "PSNR" of each image, in dB: **the PSNR of the red channel only**. (B, 3, H, W) x 2 -> (B,).

    pred (reconstructions) and target (originals) are RGB in [0, 1]. Computed as the authors' evaluator
    does: pred is clamped and rounded to 8 bits (``round_to_8_bits``), target only clamped (their
    originals are 8-bit images already); then on channel 0 (red) in [0, 1], in float32,
    PSNR = 10 log10(1 / (MSE + 1e-8)), so identical images give 80 dB. Their evaluator asks pyiqa for a
    Y-channel PSNR "in colour space rgb", and pyiqa converts nothing for that colour space and keeps
    channel 0: green and blue never count. Average the per-image values over the data set, as they do.
    """
    pred, target = _paper_inputs(pred, target)
    red_difference = pred[:, 0] - target[:, 0]  # (B, H, W)
    mean_squared_error = torch.mean(red_difference ** 2, dim=(1, 2))  # (B,)
    return 10 * torch.log10(1.0 / (mean_squared_error + PAPER_PSNR_EPS))


def yiq_luma_levels(images: torch.Tensor) -> torch.Tensor:
    """The Y of YIQ in whole 8-bit levels: (B, 3, H, W) in [0, 1] -> (B, 1, H, W) float64.

    Y = 0.299 R + 0.587 G + 0.114 B, computed in the images' dtype (float32 for the paper protocol),
    times 255, rounded to the nearest integer (halves to even), then float64.
    """
    weights = torch.tensor(_YIQ_LUMA_WEIGHTS, dtype=images.dtype, device=images.device)
    luma = torch.einsum("bchw,c->bhw", images, weights).unsqueeze(1)  # (B, 1, H, W)
    return torch.round(luma * PAPER_SSIM_LEVELS).to(torch.float64)


def paper_ssim_window(device: torch.device | str | None = None) -> torch.Tensor:
    """The paper protocol's SSIM window: an 11 x 11 Gaussian (sigma 1.5), (1, 1, 11, 11) float64.

    Built as MATLAB's ``fspecial('gaussian', 11, 1.5)``: exp(-(x^2 + y^2) / (2 sigma^2)) over the 2-D grid
    of offsets -5..5, divided by its sum, in float64; its values are then stored in float32 (as the
    authors' pyiqa stores the window) and used in float64.
    """
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2  # -5 .. 5
    squared_radius = offsets[:, None] ** 2 + offsets[None, :] ** 2  # (11, 11)
    window = torch.exp(-squared_radius / (2 * SSIM_SIGMA ** 2))
    window = (window / window.sum()).float().double()
    return window.view(1, 1, SSIM_WINDOW, SSIM_WINDOW).to(device)


def paper_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's "SSIM" of each image: **the SSIM of the YIQ luma** in 8-bit levels. (B, 3, H, W) x 2 -> (B,).

    pred (reconstructions) and target (originals) are RGB in [0, 1], at least 11 x 11 pixels. Computed as
    the authors' evaluator (pyiqa 0.1.13's default ``ssim``): pred clamped and rounded to 8 bits, target
    clamped; each image's luma ``yiq_luma_levels`` (0.299 R + 0.587 G + 0.114 B, x 255, rounded) in
    float64; local means, variances and covariance under the 11 x 11 Gaussian window (sigma 1.5,
    ``paper_ssim_window``) at the 'valid' positions only (no padding: (H - 10) x (W - 10) of them), no
    downsampling; C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2; the contrast-structure term is clipped at 0
    from below; the score is the mean of the SSIM map.
    """
    pred, target = _paper_inputs(pred, target)
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"the paper's SSIM uses only 'valid' positions of its {SSIM_WINDOW} x {SSIM_WINDOW} window, "
                         f"so images need at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {tuple(pred.shape[-2:])}.")
    luma_pred, luma_target = yiq_luma_levels(pred), yiq_luma_levels(target)  # (B, 1, H, W) float64 each
    local_mean = ValidWindowFilter(paper_ssim_window(pred.device))  # (B, 1, H, W) -> (B, 1, H - 10, W - 10)

    mu_pred, mu_target = local_mean(luma_pred), local_mean(luma_target)
    var_pred = local_mean(luma_pred * luma_pred) - mu_pred ** 2
    var_target = local_mean(luma_target * luma_target) - mu_target ** 2
    covariance = local_mean(luma_pred * luma_target) - mu_pred * mu_target
    c1, c2 = (SSIM_K1 * PAPER_SSIM_LEVELS) ** 2, (SSIM_K2 * PAPER_SSIM_LEVELS) ** 2
    contrast_structure = F.relu((2 * covariance + c2) / (var_pred + var_target + c2))
    luminance = (2 * mu_pred * mu_target + c1) / (mu_pred ** 2 + mu_target ** 2 + c1)
    return (luminance * contrast_structure).mean(dim=(1, 2, 3))


class ValidWindowFilter:
    """``F.conv2d(values, window)`` ('valid' positions) for float64 images (B, 1, H, W), ~5x faster on a CPU.

    Speed only, the same numbers: float64 ``conv2d`` has no fast CPU path (im2col of 121 values per pixel). The
    window (float32 values of a Gaussian, so separable only up to their rounding) is split into its best
    rank-1 part ``outer(column, row)``, filtered in two 1-D float64 passes (22 multiply-adds per pixel instead
    of 121), plus the residual (below 1e-9 per weight), filtered by a float32 ``conv2d`` (oneDNN): the values
    filtered here are whole 8-bit levels, their squares and products (below 2^24: exact in float32), so the
    residual's float32 rounding is ~1e-16 of the result. Measured against ``F.conv2d`` in float64: relative
    differences below 1e-14 (float64 summation order), tested in tests/evaluation/test_paper_metrics.py.
    """

    def __init__(self, window: torch.Tensor):
        kernel = window[0, 0]  # (k, k) float64
        left, singular, right = torch.linalg.svd(kernel)
        scale = singular[0].sqrt()  # (the singular vectors' common sign cancels in their outer product)
        self.column, self.row = scale * left[:, 0], scale * right[0]  # (k,) each
        self.residual = (kernel - torch.outer(self.column, self.row)).float().view_as(window)  # (1, 1, k, k)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        size = len(self.row)
        height, width = values.shape[-2] - size + 1, values.shape[-1] - size + 1
        rows = sum(self.row[offset] * values[..., :, offset:offset + width] for offset in range(size))
        separable = sum(self.column[offset] * rows[..., offset:offset + height, :] for offset in range(size))
        return separable + F.conv2d(values.float(), self.residual).double()


# ---------------------------------------------------------------------------------------------------
# Weights files and optional packages


def find_weights(filename: str, path: str | Path | None = None, what: str = "backbone", argument: str = "weights_path",
                 url: str | None = None) -> Path:
    """Return the weights file: ``path`` if given, else ``$TORCH_HOME/hub/checkpoints/<filename>``.

    Raises ``MissingWeightsError`` (one line: the file, where it was looked for, where to put it).
    """
    source = f" (download it from {url})" if url else ""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"{what} weights not found at {path}: "
                                      f"pass {argument}= the path of {filename}{source}.")
        return path
    default = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not default.is_file():
        raise MissingWeightsError(f"{what} weights not found: put {filename}{source} at {default} "
                                  f"($TORCH_HOME/hub/checkpoints/{filename}) or pass {argument}=<path to the file>.")
    return default


def import_backend(module: str, what: str):
    """Import and return ``module`` (torchvision, torch_fidelity or a part of torchmetrics), or raise
    ``MissingDependencyError`` saying why it fails and how to fix it (one line)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        detail = first_line(err)
        problem = f"{module} is not installed" if err.name == module else f"{module} fails to import ({detail})"
    except Exception as err:  # RuntimeError/OSError from a torchvision build that does not match torch, ...
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        problem = f"{module} is installed but fails to import ({type(err).__name__}: {detail})"
    vision = (f"the torchvision build matching torch {torch.__version__} (0.28.0 for torch 2.13.0; for a CPU torch "
              f"`pip install torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu`, since PyPI's "
              f"Linux wheel is a CUDA build that fails to import beside a CPU torch)")
    install = {"torchvision": vision, "torch_fidelity": f"`pip install torch-fidelity==0.4.0` and {vision}",
               "torchmetrics": f"{vision}, or uninstall torch-fidelity (torchmetrics imports torch-fidelity, which "
                               f"imports torchvision, whenever it is installed)"}
    package = module.split(".")[0]
    raise MissingDependencyError(f"{what} needs {module}, but {problem}. Install {install.get(package, package)}. "
                                 f"PSNR and SSIM work without it.") from None


# ---------------------------------------------------------------------------------------------------
# LPIPS and rFID


def lpips_network(lpips_weights: str | Path | None = None, pretrained_backbone: bool = True) -> nn.Module:
    """LPIPS v0.1, AlexNet variant (torchmetrics' copy of the reference code), in eval mode.

    Call it as ``net(pred, target)`` on images in [-1, 1], (B, 3, H, W) x 2 -> (B, 1, 1, 1).
    The linear heads ship inside torchmetrics; the AlexNet backbone is read from ``lpips_weights``
    or ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``. ``pretrained_backbone=False``
    keeps a random backbone (tests only: its scores mean nothing). Needs torchvision.
    """
    path = find_weights(ALEXNET_WEIGHTS, lpips_weights, "LPIPS AlexNet", "lpips_weights", ALEXNET_URL) \
        if pretrained_backbone else None
    import_backend("torchvision", "LPIPS")
    _NoTrainLpips = import_backend("torchmetrics.functional.image.lpips", "LPIPS")._NoTrainLpips

    net = _NoTrainLpips(net="alex", pretrained=True, pnet_rand=True)  # heads loaded, backbone random: no download
    if path is not None:
        _load_alexnet_backbone(net.net, torch.load(path, map_location="cpu", weights_only=True), path)
    return net.eval()


def _load_alexnet_backbone(backbone: nn.Module, state: dict, path) -> None:
    """Copy torchvision AlexNet ``features.<i>.*`` tensors into torchmetrics' slices (``slice<k>.<i>.*``)."""
    renamed = {}
    for slice_name, block in backbone.named_children():  # slice1 .. slice5 keep torchvision's layer indices
        for index, layer in block.named_children():
            for param in layer.state_dict():
                key = f"features.{index}.{param}"
                if key not in state:
                    raise ValueError(f"{path} is not torchvision's AlexNet state dict: it lacks {key!r}.")
                renamed[f"{slice_name}.{index}.{param}"] = state[key]
    backbone.load_state_dict(renamed, strict=True)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] to uint8 for the Inception network: (B, 3, H, W) float -> (B, 3, H, W) uint8.

    Rounds to the nearest level (``round(x * 255)``). The authors' evaluator truncates
    (``(x * 255).to(uint8)``), but only after its script has rounded the reconstructions to 8 bits
    (``round_to_8_bits``), and its originals are 8-bit images: on such inputs truncating and rounding
    give the same levels, while truncating unrounded floats would darken them by half a level on average.
    """
    return (images.clamp(0.0, 1.0) * 255).round().to(torch.uint8)


def inception_network(rfid_weights: str | Path | None = None) -> nn.Module:
    """torch-fidelity's Inception-v3 for rFID and the Inception Score, in eval mode, float64 inside.

    Called on uint8 images (B, 3, H, W) (``to_uint8``) it returns ``(features, logits)``: the 2048-d
    pool features (B, 2048) and the 1008 unbiased logits (B, 1008), both float32. The weights
    (pt_inception-2015-12-05) are read from ``rfid_weights`` or
    ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``; images are resized to
    299 with TF1-style bilinear interpolation, as every standard FID does. float64 inside, as the
    authors' copy of this network runs. Needs torch-fidelity (and torchvision).
    """
    path = find_weights(INCEPTION_WEIGHTS, rfid_weights, "rFID Inception-v3", "rfid_weights", INCEPTION_URL)
    fidelity = import_backend("torch_fidelity.feature_extractor_inceptionv3", "rFID")
    network = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path=str(path),
                                                   feature_extractor_internal_dtype="float64")
    return network.eval()


class FeatureMoments:
    """Count, sum and sum of outer products of feature vectors, in float64: what a Frechet distance needs.

    ``add(features)`` with (B, D); the state (``count``, ``total`` (D,), ``outer`` (D, D)) is a sum over
    images, so shards of a data set combine by adding their states (``all_reduce_sum``).
    """

    def __init__(self, dim: int | None = None, device: torch.device | str | None = None):
        self.count = 0
        self.total = None if dim is None else torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = None if dim is None else torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, features: torch.Tensor) -> None:
        """Add a batch of feature vectors (B, D)."""
        features = features.detach().to(torch.float64)
        if self.total is None:  # the first batch tells the feature size
            dim = features.shape[1]
            self.total = torch.zeros(dim, dtype=torch.float64, device=features.device)
            self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=features.device)
        self.count += features.shape[0]
        self.total += features.sum(0)
        self.outer += features.T @ features

    def mean_and_covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (D,) and unbiased covariance (D, D) of the features seen (at least 2)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 images, got {self.count}.")
        mean = self.total / self.count
        covariance = (self.outer - torch.outer(self.total, self.total) / self.count) / (self.count - 1)
        return mean, covariance


def frechet_distance(real: FeatureMoments, fake: FeatureMoments) -> float:
    """Frechet distance between Gaussians fitted to two feature sets: the FID when the features are Inception's.

    |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2)), in float64, the trace of the matrix square
    root taken as the sum of the square roots of the eigenvalues of S_r S_f.
    """
    mean_real, covariance_real = real.mean_and_covariance()
    mean_fake, covariance_fake = fake.mean_and_covariance()
    eigenvalues = torch.linalg.eigvals(covariance_real @ covariance_fake)
    trace_of_root = eigenvalues.sqrt().real.sum()
    distance = ((mean_real - mean_fake) ** 2).sum() + covariance_real.trace() + covariance_fake.trace() \
        - 2 * trace_of_root
    return float(distance)


def inception_score(probability_sum: torch.Tensor, p_log_p_sum: torch.Tensor, count: int) -> float:
    """Inception Score of a set of images from two sums over its images, over all of them as one split.

    probability_sum (L,): the sum of each image's class probabilities p(y|x); p_log_p_sum (L,): the sum of
    p(y|x) log(p(y|x) + 1e-16). IS = exp(mean over images of KL(p(y|x) || p(y))), p(y) the mean of p(y|x).
    One split over the whole set, as the authors' evaluator computes it (torch-fidelity's default uses 10).
    """
    if count < 1:
        raise ValueError("the Inception Score needs at least one image.")
    marginal = probability_sum / count
    mean_kl = (p_log_p_sum - probability_sum * torch.log(marginal + 1e-16)).sum() / count
    return float(torch.exp(mean_kl))
