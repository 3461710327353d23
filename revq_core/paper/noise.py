"""Noise tolerance of a VAE decoder in the normalized latent space (the paper's motivation for ReVQ).

A quantizer replaces each normalized latent x by a nearby code, i.e. adds an error. The paper shows
that DC-AE decodes x + N(0, sigma^2) (x normalized per dimension with the training statistics) to a
good image while sigma stays below about 0.3, and degrades fast above it.

    sweep = noise_sweep(vae, normalizer, latents, images, sigmas=(0.0, 0.1, 0.3))
    sweep.quality[i]["psnr_y"]      # mean PSNR (dB) of the images decoded at sigmas[i]

The same standard-normal draw ``eps`` (shape of the latents) is scaled by every sigma, so the curve
compares the same perturbation direction at growing size (common random numbers: a smooth curve).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from revq_core.autoencoders.adapters import decode
from revq_core.evaluation.vae_quality import reconstruction_quality
from revq_core.modeling.normalizer import LatentNormalizer

METRICS = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")


@dataclass
class NoiseSweep:
    sigmas: list[float]  # noise standard deviations, in units of the per-dimension latent std
    quality: list[dict[str, float]]  # per sigma: mean psnr_rgb, ssim_rgb, psnr_y, ssim_y vs the original images
    examples: torch.Tensor  # (S, E, 3, H, W) decoded images in [-1, 1] of the first E latents, per sigma
    latent_mse: list[float]  # per sigma: mean squared noise actually added in normalized space (~ sigma^2)

    def metric(self, name: str) -> list[float]:
        """One metric over the sigma grid, e.g. ``metric("psnr_y")``."""
        return [scores[name] for scores in self.quality]


def add_latent_noise(latents: torch.Tensor, normalizer: LatentNormalizer, sigma: float,
                     standard_noise: torch.Tensor) -> torch.Tensor:
    """VAE latents (N, C, h, w) -> VAE latents whose normalized values got ``sigma * standard_noise`` added.

    ``standard_noise`` has the latents' shape (N(0, 1) draws); sigma is in units of each dimension's
    training-set standard deviation.
    """
    return normalizer.denormalize(normalizer.normalize(latents) + sigma * standard_noise)


@torch.no_grad()
def noise_sweep(vae, normalizer: LatentNormalizer, latents: torch.Tensor, images: torch.Tensor,
                sigmas, seed: int = 0, batch_size: int = 128, num_examples: int = 6) -> NoiseSweep:
    """Decode normalized latents + N(0, sigma^2) for every sigma and score against the original images.

    Args:
        vae: a frozen AutoencoderDC (``revq_core.autoencoders.loading.load_vae``).
        normalizer: per-dimension statistics of the training latents.
        latents: (N, C, h, w) VAE latents of ``images``; images: (N, 3, H, W) in [-1, 1].
        sigmas: noise standard deviations in normalized units; seed: of the one standard-normal draw.
        num_examples: how many decoded images per sigma to keep for a figure.
    """
    if len(latents) != len(images):
        raise ValueError(f"latents ({len(latents)}) and images ({len(images)}) must pair up one to one.")
    generator = torch.Generator().manual_seed(seed)
    standard_noise = torch.randn(latents.shape, generator=generator)
    quality, examples, latent_mse = [], [], []
    for sigma in sigmas:
        noisy = add_latent_noise(latents.float(), normalizer, float(sigma), standard_noise)
        decoded = decode(vae, noisy, batch_size=batch_size)
        quality.append(reconstruction_quality(images, decoded))
        examples.append(decoded[:num_examples])
        latent_mse.append(float((normalizer.normalize(noisy) - normalizer.normalize(latents.float())).pow(2).mean()))
    return NoiseSweep([float(sigma) for sigma in sigmas], quality, torch.stack(examples), latent_mse)


def crossing_sigma(sigmas, values, level: float) -> float:
    """The smallest sigma where ``values`` (decreasing with sigma) first falls to ``level``, by linear
    interpolation between grid points; ``nan`` if it never does on the grid."""
    for (s0, v0), (s1, v1) in zip(zip(sigmas, values), zip(sigmas[1:], values[1:])):
        if v0 >= level >= v1 and v0 != v1:
            return s0 + (v0 - level) * (s1 - s0) / (v0 - v1)
        if v1 == level:
            return s1
    return float("nan")


def steepest_drop(sigmas, values) -> tuple[float, float]:
    """(midpoint sigma, slope per unit sigma) of the grid interval where ``values`` fall fastest."""
    slopes = [((s0 + s1) / 2, (v1 - v0) / (s1 - s0))
              for (s0, v0), (s1, v1) in zip(zip(sigmas, values), zip(sigmas[1:], values[1:]))]
    return min(slopes, key=lambda pair: pair[1])


def knee_sigma(sigmas, values) -> float:
    """Where the curve bends most: the grid sigma with the largest drop in slope (discrete second
    difference on a possibly uneven grid), i.e. the end of the flat, tolerant part of the curve."""
    best_sigma, best_bend = float("nan"), -float("inf")
    for i in range(1, len(sigmas) - 1):
        left = (values[i] - values[i - 1]) / (sigmas[i] - sigmas[i - 1])
        right = (values[i + 1] - values[i]) / (sigmas[i + 1] - sigmas[i])
        if left - right > best_bend:
            best_sigma, best_bend = sigmas[i], left - right
    return best_sigma


# ---- plotting ----------------------------------------------------------------------------------

def plot_quality_curves(sweep: NoiseSweep, threshold: float | None = None, paper_threshold: float = 0.3):
    """PSNR (left) and SSIM (right), RGB and Y, against sigma; vertical lines at the thresholds."""
    import matplotlib.pyplot as plt

    figure, (psnr_axis, ssim_axis) = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, kind in ((psnr_axis, "psnr"), (ssim_axis, "ssim")):
        for channel, style in (("rgb", "o-"), ("y", "s--")):
            axis.plot(sweep.sigmas, sweep.metric(f"{kind}_{channel}"), style, label=f"{kind.upper()} {channel.upper()}")
        axis.axvline(paper_threshold, color="gray", linestyle=":", label=f"paper threshold {paper_threshold}")
        if threshold is not None and threshold == threshold:
            axis.axvline(threshold, color="tab:red", linestyle="-.", label=f"our estimate {threshold:.2f}")
        axis.set_xlabel("noise std sigma (normalized latent units)")
        axis.set_ylabel("PSNR (dB)" if kind == "psnr" else "SSIM")
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_noise_grid(sweep: NoiseSweep, originals: torch.Tensor):
    """Rows: examples; columns: the original image, then the decoded image at each sigma."""
    import matplotlib.pyplot as plt

    num_sigmas, num_examples = sweep.examples.shape[:2]
    figure, axes = plt.subplots(num_examples, num_sigmas + 1, figsize=(1.1 * (num_sigmas + 1), 1.1 * num_examples),
                                squeeze=False)
    to_display = lambda image: ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    for row in range(num_examples):
        axes[row, 0].imshow(to_display(originals[row]))
        for column in range(num_sigmas):
            axes[row, column + 1].imshow(to_display(sweep.examples[column, row]))
    axes[0, 0].set_title("original", fontsize=8)
    for column, sigma in enumerate(sweep.sigmas):
        axes[0, column + 1].set_title(f"sigma {sigma:g}", fontsize=8)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout(pad=0.2)
    return figure
