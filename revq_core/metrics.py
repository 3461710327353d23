"""Reconstruction metrics as the paper reports them: PSNR, SSIM, LPIPS and rFID.

Images are batches of shape (B, 3, H, W), RGB, with values in [0, 1] (pass ``value_range=(-1, 1)``
for decoder outputs in [-1, 1]). Values outside the range are clamped first, as the authors'
evaluator does. Every score is a mean over images of the per-image score (PSNR too: the mean of
per-image PSNRs, not the PSNR of the pooled MSE).

- PSNR and SSIM come from torchmetrics (``data_range=1.0``; SSIM with its 11x11 Gaussian window,
  sigma 1.5), on RGB or on the BT.601 luma ``rgb_to_y``. The paper states luma (Y) numbers.
- LPIPS is torchmetrics' copy of LPIPS v0.1, AlexNet variant, on inputs mapped to [-1, 1]. Its
  linear heads ship inside torchmetrics; the AlexNet backbone is torchvision's ImageNet weights,
  read from a local file.
- rFID is torchmetrics' ``FrechetInceptionDistance`` on torch-fidelity's Inception-v3 (the
  pt_inception-2015-12-05 weights, 2048-d pool features), read from a local file, with
  ``antialias=False`` (TF1-style bilinear resize to 299, the standard FID protocol).

The authors' evaluator differs (read from a public copy of their code, which pins pyiqa 0.1.13): its
"PSNR" is pyiqa's psnr(test_y_channel=True, color_space="rgb"), which converts nothing and keeps
channel 0, the red channel; its SSIM is pyiqa's default, on YIQ luma (0.299 R + 0.587 G + 0.114 B)
rounded to 8 bits, over the 'valid' window positions only. Neither is reproduced here.

Nothing here downloads. A missing weights file raises ``MissingWeightsError`` naming the file and
where to put it; a missing or broken torchvision / torch-fidelity raises ``MissingDependencyError``
saying how to install it. PSNR and SSIM need neither.

Use ``ReconstructionMetrics`` to evaluate over many batches::

    metrics = ReconstructionMetrics(lpips=True, rfid=True)
    for images in loader:
        metrics.update(model(images), images)   # (pred, target)
    metrics.compute()   # {'psnr_rgb': ..., 'psnr_y': ..., 'ssim_rgb': ..., 'ssim_y': ..., 'lpips': ..., 'rfid': ...}
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

try:
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
except RuntimeError as err:  # seen with a CUDA torchvision wheel installed beside a CPU torch
    raise ImportError(
        f"torchmetrics failed to import ({err}); this happens when the installed torchvision does not match "
        f"torch {torch.__version__} (a CUDA torchvision wheel beside a CPU torch, say). Uninstall torchvision "
        f"(`pip uninstall torchvision`) or install the build that matches torch."
    ) from err

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


def _check_images(pred: torch.Tensor, target: torch.Tensor) -> None:
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
    _check_images(pred, target)
    pred, target = to_unit_range(pred, value_range), to_unit_range(target, value_range)
    if pred.dtype not in (torch.float32, torch.float64):  # half precision is too coarse for PSNR above ~40 dB
        pred, target = pred.float(), target.float()
    if channel == "y":
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    return pred, target


# ---------------------------------------------------------------------------------------------------
# PSNR and SSIM


def psnr_per_image(pred, target, channel: str = "y", value_range=(0.0, 1.0)) -> torch.Tensor:
    """PSNR in dB of each image: (B, 3, H, W) x 2 -> (B,), capped at ``PSNR_CAP_DB`` (identical images)."""
    pred, target = _prepare(pred, target, channel, value_range)
    scores = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))  # (B,)
    return scores.clamp(max=PSNR_CAP_DB)


def ssim_per_image(pred, target, channel: str = "y", value_range=(0.0, 1.0)) -> torch.Tensor:
    """SSIM of each image: (B, 3, H, W) x 2 -> (B,). On RGB, the mean of the three channels' SSIMs."""
    pred, target = _prepare(pred, target, channel, value_range)
    return structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")  # (B,)


def psnr(pred, target, channel: str = "y", value_range=(0.0, 1.0)) -> float:
    """Mean over the batch of per-image PSNR (dB) between pred and target, both (B, 3, H, W).

    channel "y" (default; the paper states Y) or "rgb". Identical images score ``PSNR_CAP_DB``
    (80 dB) rather than inf, so one perfect image cannot make a dataset mean infinite.
    """
    return float(psnr_per_image(pred, target, channel, value_range).mean())


def ssim(pred, target, channel: str = "y", value_range=(0.0, 1.0)) -> float:
    """Mean over the batch of per-image SSIM between pred and target, both (B, 3, H, W)."""
    return float(ssim_per_image(pred, target, channel, value_range).mean())


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


def _require(module: str, what: str) -> None:
    """Import ``module`` or raise ``MissingDependencyError`` saying why and how to install it."""
    try:
        __import__(module)
    except ImportError as err:
        problem = f"{module} is not installed" if err.name == module else f"{module} fails to import ({err})"
    except (RuntimeError, OSError) as err:  # a torchvision build that does not match the installed torch
        problem = f"{module} is installed but fails to import ({type(err).__name__}: {err})"
    else:
        return
    vision = (f"the torchvision build matching torch {torch.__version__} (0.28.0 for torch 2.13.0; for a CPU torch "
              f"`pip install torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu`, since PyPI's "
              f"Linux wheel is a CUDA build that fails to import beside a CPU torch)")
    install = {"torchvision": vision, "torch_fidelity": f"`pip install torch-fidelity==0.4.0` and {vision}"}
    raise MissingDependencyError(f"{what} needs {module}, but {problem}. Install {install.get(module, module)}. "
                                 f"PSNR and SSIM work without it.")


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
    _require("torchvision", "LPIPS")
    from torchmetrics.functional.image.lpips import _NoTrainLpips

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


def fid_metric(rfid_weights: str | Path | None = None, feature: int | nn.Module = 2048):
    """torchmetrics ``FrechetInceptionDistance`` set up as the standard rFID protocol.

    torch-fidelity's Inception-v3 from ``rfid_weights`` or
    ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``, ``antialias=False``,
    ``feature`` 2048 (the standard pool features; 64, 192 or 768 only for quick checks, since the
    2048-d Frechet distance takes ~40 s on a CPU). A module as ``feature`` replaces Inception
    (uint8 (B, 3, H, W) -> (B, D); a stand-in for tests). Feed uint8 images (``to_uint8``) with
    ``update(images, real=...)``. Needs torch-fidelity for Inception.
    """
    if isinstance(feature, nn.Module):
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=feature, normalize=False)
    path = find_weights(INCEPTION_WEIGHTS, rfid_weights, "rFID Inception-v3", "rfid_weights", INCEPTION_URL)
    _require("torch_fidelity", "rFID")
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=feature, feature_extractor_weights_path=str(path), antialias=False,
                                    normalize=False)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] to uint8 for the Inception network: (B, 3, H, W) float -> (B, 3, H, W) uint8.

    Truncates (``(x * 255).to(uint8)``) as the authors' evaluator and torchmetrics' ``normalize=True`` do.
    """
    return (images.clamp(0.0, 1.0) * 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------------
# Accumulator


class ReconstructionMetrics:
    """PSNR and SSIM (RGB and Y), and optionally LPIPS and rFID, accumulated over batches.

    ``update(pred, target)`` with reconstructions and originals, both (B, 3, H, W) in ``value_range``;
    ``compute()`` returns floats: psnr_rgb, psnr_y, ssim_rgb, ssim_y, then lpips and rfid if enabled,
    and num_images. Each is the mean over all images seen (rFID is over the pooled feature statistics).

    lpips / rfid: False (skip), True (the standard network, which must be on disk, see
    ``lpips_network`` and ``fid_metric``), or a module to use instead: for lpips a network called as
    ``net(pred, target)`` on [-1, 1] images returning (B, ...) distances, for rfid an Inception-like
    feature extractor taking uint8 images (as ``fid_metric(feature=...)``).
    """

    def __init__(self, value_range=(0.0, 1.0), lpips: bool | nn.Module = False, rfid: bool | nn.Module = False,
                 lpips_weights: str | Path | None = None, rfid_weights: str | Path | None = None):
        self.value_range = value_range
        self._lpips = None
        if isinstance(lpips, nn.Module):
            self._lpips = lpips.eval()
        elif lpips:
            self._lpips = lpips_network(lpips_weights)
        self._fid = None
        if isinstance(rfid, nn.Module):
            self._fid = fid_metric(feature=rfid)
        elif rfid:
            self._fid = fid_metric(rfid_weights)
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._sums = {"psnr_rgb": 0.0, "psnr_y": 0.0, "ssim_rgb": 0.0, "ssim_y": 0.0, "lpips": 0.0}
        self.num_images = 0
        if self._fid is not None:
            self._fid.reset()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: pred (reconstructions) and target (originals), both (B, 3, H, W) in ``value_range``."""
        _check_images(pred, target)
        pred, target = to_unit_range(pred, self.value_range), to_unit_range(target, self.value_range)
        for channel in ("rgb", "y"):
            self._sums[f"psnr_{channel}"] += float(psnr_per_image(pred, target, channel).sum())
            self._sums[f"ssim_{channel}"] += float(ssim_per_image(pred, target, channel).sum())
        if self._lpips is not None:
            self._lpips.to(pred.device)
            distances = self._lpips(pred * 2 - 1, target * 2 - 1)  # (B, 1, 1, 1), inputs in [-1, 1]
            self._sums["lpips"] += float(distances.sum())
        if self._fid is not None:
            self._fid.to(pred.device)
            self._fid.update(to_uint8(target), real=True)
            self._fid.update(to_uint8(pred), real=False)
        self.num_images += pred.shape[0]

    def compute(self) -> dict[str, float]:
        """Means over all images seen: psnr_rgb, psnr_y, ssim_rgb, ssim_y[, lpips][, rfid], num_images."""
        if self.num_images == 0:
            raise ValueError("no images seen: call update(pred, target) before compute().")
        keys = ["psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y"] + (["lpips"] if self._lpips is not None else [])
        results = {key: self._sums[key] / self.num_images for key in keys}
        if self._fid is not None:
            if self.num_images < 2:
                raise ValueError("rFID needs at least 2 images (it compares feature covariances).")
            results["rfid"] = float(self._fid.compute())
        results["num_images"] = self.num_images
        return results
