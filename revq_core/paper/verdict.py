"""Verdict cells: a notebook's claims and headline numbers, checked alike on every machine.

A training run's last digits are not portable: float reductions run in another order on another CPU
(BLAS and oneDNN kernels, the AVX2 and AVX-512 paths of our search kernel), with another thread count,
or on a GPU. So the notebooks do not let nbval compare trained numbers digit by digit (those cells are
marked ``# NBVAL_IGNORE_OUTPUT``). The last code cell of each notebook builds a ``Verdict`` instead:

- ``claim``: the paper's claim as a yes/no fact of this run (e.g. "channel < spatial at T = 512"), asserted;
- ``near``: a headline number must lie within a stated band around the value committed with the notebook
  (bands sized from the spread measured across machines and thread counts, see notebooks/README.md).

What ``report`` prints (the claim, the committed value and its band; never the measured digits) is the
same on every machine, so nbval compares it exactly, and it raises one ``AssertionError`` naming the
notebook, each number and its band when a result really changed.

    verdict = Verdict("05_train")
    verdict.claim("the rectifier lowers the validation latent MSE", rectified_mse < quantized_mse)
    verdict.near("PSNR (Y) of ReVQ, dB", psnr_y, committed=28.69, tolerance=0.3)
    verdict.report()
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field


@dataclass
class Verdict:
    """The checks of one notebook's verdict cell; ``report()`` prints them and fails on any miss."""
    notebook: str
    compare_committed: bool = True  # False when the notebook runs with other parameters than the committed run
    strict: bool = True  # False: report() prints the failures but does not raise (smoke runs, e.g. one epoch)
    lines: list = field(default_factory=list)  # what report() prints, one per check (machine-independent)
    measured: dict = field(default_factory=dict)  # headline number name -> {"value", "committed", "band"}
    failures: list = field(default_factory=list)  # what went wrong, with the measured values

    def claim(self, statement: str, holds: bool, detail: str = "") -> bool:
        """Record a yes/no claim of the paper as tested on this run; ``detail`` (measured values) is shown
        only when it fails."""
        holds = bool(holds)
        self.lines.append(f"{'ok  ' if holds else 'FAIL'}  claim: {statement}")
        if not holds:
            self.failures.append(f"claim does not hold: {statement}" + (f" ({detail})" if detail else ""))
        return holds

    def near(self, name: str, value: float, committed: float, tolerance: float | None = None,
             relative: float | None = None) -> bool:
        """Record that ``value`` lies within ``committed`` +- ``tolerance`` (absolute) or
        +- ``relative`` x |committed|; exactly one of the two is given."""
        if (tolerance is None) == (relative is None):
            raise ValueError(f"{self.notebook}: give exactly one of tolerance= (absolute) or relative= for {name!r}.")
        if not self.compare_committed:
            self.lines.append(f"--    {name}: not compared (the parameters differ from the committed run's)")
            return True
        band = tolerance if tolerance is not None else relative * abs(committed)
        band_text = f"{committed:g} +- {tolerance:g}" if tolerance is not None else f"{committed:g} +- {100 * relative:g}%"
        value = float(value)
        self.measured[name] = {"value": value, "committed": committed, "band": band}
        holds = math.isfinite(value) and abs(value - committed) <= band
        self.lines.append(f"{'ok  ' if holds else 'FAIL'}  {name} within {band_text}")
        if not holds:
            self.failures.append(f"{name} = {value:.6g} is outside its band {band_text} "
                                 f"([{committed - band:.6g}, {committed + band:.6g}])")
        return holds

    def report(self) -> None:
        """Print one line per check; raise ``AssertionError`` naming the notebook and every miss.

        With ``$REVQ_VERDICT_LOG`` set, the measured numbers are also appended to that file as one JSON line
        (how the bands' spread across machines and thread counts is measured: notebooks/README.md)."""
        print("\n".join(self.lines))
        if os.environ.get("REVQ_VERDICT_LOG"):
            with open(os.environ["REVQ_VERDICT_LOG"], "a") as log:
                log.write(json.dumps({"notebook": self.notebook, "measured": self.measured,
                                      "failures": self.failures, "threads": _threads(),
                                      "cpu_kernel": os.environ.get("REVQ_CPU_KERNEL", "1"),
                                      "kernel_arch": os.environ.get("REVQ_CPU_KERNEL_ARCH", "native"),
                                      "aten_capability": os.environ.get("ATEN_CPU_CAPABILITY", "")}) + "\n")
        if self.failures and not self.strict:
            print(f"{self.notebook}: {len(self.failures)} check(s) failed (not asserted: strict=False): "
                  + "; ".join(self.failures))
        elif self.failures:
            raise AssertionError(f"{self.notebook}: {len(self.failures)} check(s) failed: " + "; ".join(self.failures)
                                 + ". If the change is intended, re-execute the notebook and update the committed "
                                 "values in its verdict cell.")


def _threads() -> int:
    import torch

    return torch.get_num_threads()
