"""Per-dimension mean and variance of a stream of batches, in one pass, in float64.

The one streaming-moments helper behind the normalizer's statistics (``LatentNormalizer.fit``),
``latent_statistics`` and the ImageNet latent cache (which saves and merges the moments of each rank's
share). Batches are merged with Chan et al.'s parallel update (count, mean, sum of squared deviations),
so the result equals the mean / variance of the whole set without holding it in float64. Works on torch
tensors and numpy arrays alike (the caller converts batches to float64).

    moments = RunningMoments()
    for batch in batches:                     # (n, C, h, w) float64 each
        moments.add(batch)
    mean, var = moments.mean, moments.variance(correction=0)
"""
from __future__ import annotations


class RunningMoments:
    """Count, per-dimension mean and sum of squared deviations of the batches added so far."""

    def __init__(self, count: int = 0, mean=None, squared_deviations=None):
        self.count, self.mean, self.squared_deviations = count, mean, squared_deviations

    def add(self, batch) -> None:
        """Merge a float64 batch (n, ...) of samples."""
        if batch.shape[0] == 0:
            return
        batch_mean = batch.mean(0)
        self.merge(RunningMoments(batch.shape[0], batch_mean, ((batch - batch_mean) ** 2).sum(0)))

    def merge(self, other: "RunningMoments") -> None:
        """Merge the moments of another set (e.g. another rank's share)."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.squared_deviations = other.count, other.mean, other.squared_deviations
            return
        if tuple(other.mean.shape) != tuple(self.mean.shape):
            raise ValueError(f"batches differ in shape: {tuple(other.mean.shape)} vs {tuple(self.mean.shape)}.")
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.squared_deviations = (self.squared_deviations + other.squared_deviations
                                   + delta**2 * (self.count * other.count / total))
        self.count = total

    def variance(self, correction: int = 0):
        """Per-dimension variance: population (``correction=0``) or unbiased (1)."""
        if self.count - correction <= 0:
            raise ValueError(f"need more than {correction} sample(s) for a variance with correction={correction}, "
                             f"got {self.count}.")
        return self.squared_deviations / (self.count - correction)
