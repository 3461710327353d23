"""Non-activation reset: codes that went unused during an epoch move next to the most used ones.

docs/method.md, "Non-activation reset" (end of every epoch, per group):
    n_reset = min(floor(reset_ratio * K), number of codes with count 0)
    sort the codes by count; the n_reset least-used codes become the n_reset most-used codes
    + noise_std * N(0, 1); then the counts go back to zero.
Codebook usage = fraction of codes with a non-zero count, averaged over groups.
Sorting is stable, so equal counts are ordered by code index and a seeded reset is reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class CodeUsage:
    """Per-group code counts accumulated over an epoch: ``counts`` is (G, K) int64.

    ``group_of_token`` (T,) maps each token position to its codebook (``Quantizer.group_of_token``).
    """

    def __init__(self, num_groups: int, codes_per_group: int, group_of_token: torch.Tensor):
        self.num_groups = num_groups
        self.codes_per_group = codes_per_group
        self.group_of_token = group_of_token.detach().long()
        self.counts = torch.zeros(num_groups, codes_per_group, dtype=torch.long, device=group_of_token.device)

    @torch.no_grad()
    def update(self, codes: torch.Tensor) -> None:
        """Count the codes of a batch: codes (B, T) int64."""
        flat = self.group_of_token.to(codes.device) * self.codes_per_group + codes  # (B, T) rows of (G*K)
        counts = torch.bincount(flat.reshape(-1), minlength=self.num_groups * self.codes_per_group)
        self.counts += counts.view_as(self.counts).to(self.counts.device)

    def usage_per_group(self) -> torch.Tensor:
        """(G,) fraction of each codebook's codes selected at least once."""
        return (self.counts > 0).float().mean(dim=1)

    def usage(self) -> float:
        """Codebook usage, averaged over groups (the paper's figure)."""
        return float(self.usage_per_group().mean())

    def zero_(self) -> None:
        self.counts.zero_()

    def state_dict(self) -> dict:
        return {"counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.counts.copy_(state["counts"])


@dataclass
class ResetStats:
    usage: float  # mean fraction of used codes before the reset
    usage_per_group: torch.Tensor  # (G,)
    codes_reset: int  # total over groups
    codes_reset_per_group: torch.Tensor  # (G,) int64


@torch.no_grad()
def reset_unused_codes(codebook: torch.Tensor, counts: torch.Tensor, reset_ratio: float = 0.2,
                       noise_std: float = 0.1, generator: torch.Generator | None = None) -> ResetStats:
    """Apply the non-activation reset in place to ``codebook`` (G, K, D) using ``counts`` (G, K).

    The noise is drawn on the CPU from ``generator`` so that the same seed gives the same codebook
    on every device and every rank. ``counts`` is not modified; zero it (``CodeUsage.zero_``) after.
    """
    num_groups, codes_per_group, code_dim = codebook.shape
    if tuple(counts.shape) != (num_groups, codes_per_group):
        raise ValueError(f"counts must have shape (G, K) = {(num_groups, codes_per_group)} to match the codebook, "
                         f"got {tuple(counts.shape)}.")
    if not 0.0 <= reset_ratio <= 1.0:
        raise ValueError(f"reset_ratio must be in [0, 1], got {reset_ratio}.")
    counts = counts.to(codebook.device)
    unused_per_group = (counts == 0).sum(dim=1)  # (G,)
    max_reset = math.floor(reset_ratio * codes_per_group)
    resets_per_group = unused_per_group.clamp(max=max_reset)  # (G,) n_reset of each group
    stats = ResetStats(usage=float((counts > 0).float().mean(dim=1).mean()),
                       usage_per_group=(counts > 0).float().mean(dim=1).cpu(),
                       codes_reset=int(resets_per_group.sum()), codes_reset_per_group=resets_per_group.cpu())
    widest = int(resets_per_group.max()) if num_groups else 0
    if widest == 0:
        return stats
    least_used = torch.sort(counts, dim=1, stable=True).indices[:, :widest]  # (G, n): ascending counts
    most_used = torch.sort(counts, dim=1, descending=True, stable=True).indices[:, :widest]  # (G, n)
    selected = torch.arange(widest, device=codebook.device)[None, :] < resets_per_group[:, None]  # (G, n)
    group_ids = torch.arange(num_groups, device=codebook.device)[:, None].expand(-1, widest)[selected]
    targets, sources = least_used[selected], most_used[selected]  # (R,) each, in (group, rank) order
    noise = torch.randn(len(targets), code_dim, generator=generator).to(codebook)  # (R, D)
    codebook[group_ids, targets] = codebook[group_ids, sources] + noise_std * noise
    return stats
