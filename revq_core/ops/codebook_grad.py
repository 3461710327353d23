"""The codebook gradient added in place: a speed trick for CPU training (``MultiGroupQuantizer.prepare_training``).

The quantizer looks its codes up with ``index_select`` (``Quantizer.lookup``), whose backward allocates a
fresh dense (G, K, D) gradient every step. On the CPU the first touch of that fresh memory costs ~35 ms at
512T and ~0.6-1.7 s at K = 262,144 (page faults; benchmarks/README.md). ``InPlaceCodebookGrad``, once
set on a quantizer (``quantizer.in_place_grad``, by its ``prepare_training`` on the CPU), makes the lookup's backward add into the kept
dense ``codebook.grad`` instead, in one of two modes, with the same numbers:

- ``"rows"`` (one process): ``index_add_`` of the batch's B * T rows straight into ``codebook.grad``; autograd
  gets no gradient for the codebook (no hooks fire), and ``zero_grad`` zeroes only the rows written since
  the last zeroing (the rest are still zero).
- ``"sparse"`` (under DDP): a sparse COO gradient that autograd adds in place into ``codebook.grad``, so DDP's
  hooks all-reduce a dense tensor as usual; the all-reduce may fill any row, so it is zeroed whole.

Where ``codebook.grad`` does not exist yet (the first step) the backward returns index_select's dense
gradient, so ``.grad`` is never sparse; the rows are zeroed whole whenever they are not known (first step,
a replaced tensor). Only for loops that call ``.backward()``; ``finish_training`` restores the plain lookup.
"""
from __future__ import annotations

import weakref

import torch

MODES = ("rows", "sparse")


class InPlaceCodebookGrad:
    """The in-place codebook gradient of one quantizer's codebook (G, K, D); see the module docstring."""

    def __init__(self, codebook: torch.nn.Parameter, mode: str = "rows"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        self.codebook, self.mode = codebook, mode
        self._rows_since_zero: list[torch.Tensor] | None = None  # None: unknown, zero it whole
        self._zeroed_grad = None  # weakref to the .grad tensor those rows were written into

    def lookup(self, flat_rows: torch.Tensor) -> torch.Tensor:
        """Rows (n,) of ``codebook.view(G * K, D)`` -> (n, D), with the in-place backward."""
        return _CodebookRows.apply(self.codebook, flat_rows, self)

    def zero_grad(self) -> None:
        """Zero ``codebook.grad`` in place (only the rows written since the last call, in ``"rows"`` mode)."""
        grad = self.codebook.grad
        if grad is None:
            return
        known = self.mode == "rows" and self._rows_since_zero is not None and self._zeroed_grad() is grad
        if known:
            if self._rows_since_zero:
                grad.view(-1, self.codebook.shape[-1]).index_fill_(0, torch.cat(self._rows_since_zero), 0.0)
        else:
            grad.zero_()
        self._rows_since_zero, self._zeroed_grad = [], weakref.ref(grad)

    def note_rows(self, flat_rows: torch.Tensor | None) -> None:
        """Record the rows (n,) a backward added into ``codebook.grad``; None: unknown (zero it whole next)."""
        if flat_rows is None or self._rows_since_zero is None:
            self._rows_since_zero = None
        else:
            self._rows_since_zero.append(flat_rows)

    def __getstate__(self):  # deep copies and pickling: the recorded rows belong to this .grad tensor only
        return {**self.__dict__, "_rows_since_zero": None, "_zeroed_grad": None}


class _CodebookRows(torch.autograd.Function):
    """codebook (G, K, D), flat_rows (n,) -> rows (n, D) of codebook.view(G * K, D), like index_select,
    with the backward of ``InPlaceCodebookGrad``'s mode."""

    @staticmethod
    def forward(ctx, codebook, flat_rows, owner):
        ctx.owner = owner  # the codebook itself is not saved: in-place updates before backward stay legal
        ctx.save_for_backward(flat_rows)
        return codebook.reshape(-1, codebook.shape[-1]).index_select(0, flat_rows)

    @staticmethod
    def backward(ctx, grad_rows):
        (flat_rows,) = ctx.saved_tensors
        owner = ctx.owner
        shape = owner.codebook.shape
        groups, codes_per_group, code_dim = shape
        existing = owner.codebook.grad
        if existing is not None and existing.layout == torch.strided and existing.shape == shape:
            if owner.mode == "rows":
                existing.view(-1, code_dim).index_add_(0, flat_rows, grad_rows.to(existing.dtype))
                owner.note_rows(flat_rows)
                return None, None, None
            owner.note_rows(None)  # "sparse": hooks (DDP) may fill any row, so it is zeroed whole
            indices = torch.stack([flat_rows // codes_per_group, flat_rows % codes_per_group])  # (2, n)
            return torch.sparse_coo_tensor(indices, grad_rows, shape, check_invariants=False), None, None
        owner.note_rows(None)  # a fresh tensor: which rows it holds is not tracked
        dense = grad_rows.new_zeros(groups * codes_per_group, code_dim).index_add_(0, flat_rows, grad_rows)
        return dense.view(shape), None, None
