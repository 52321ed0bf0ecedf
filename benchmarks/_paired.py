"""Shared helpers for re-rendered comparisons: per-seed paired differences and kept lines.

A method is compared with its baseline through the per-seed differences (same seed = same
data, initial weights and data order): their mean with a 95 % t interval
(:func:`crowdmed.metrics.stats.paired_difference`), and the verdict "better" / "worse" only
when the interval excludes 0, else "no difference detected".

Usage from a script in ``benchmarks/``::

    from _paired import paired, paired_cell, section_line

    cell = paired_cell(method_scores, baseline_scores)  # "+0.012 [−0.003, +0.027], ..."
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from _report import REPO

__all__ = ["INTERVAL_NOTE", "paired", "paired_cell", "section_line", "verdict_counts"]

#: One sentence for a table's caption.
INTERVAL_NOTE = (
    "Paired differences: mean over seeds of the per-seed difference (method − baseline, same "
    "seed = same data and initial weights) with its 95 % t interval; a method is called better "
    "or worse only when the interval excludes 0, otherwise no difference detected."
)


def paired(a: Sequence[float], b: Sequence[float], *, higher_is_better: bool = True):
    """:func:`paired_difference` of ``a − b`` over the pairs where both values are finite."""
    from crowdmed.metrics.stats import paired_difference

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    return paired_difference(x[ok], y[ok], higher_is_better=higher_is_better)


def paired_cell(
    a: Sequence[float],
    b: Sequence[float],
    *,
    digits: int = 3,
    scale: float = 1.0,
    higher_is_better: bool = True,
) -> str:
    """One table cell: ``+0.012 [-0.003, +0.027], no difference detected``."""
    from crowdmed.metrics.stats import format_difference

    r = paired(a, b, higher_is_better=higher_is_better)
    return format_difference(r, digits=digits, scale=scale)


def verdict_counts(verdicts: Sequence[str]) -> str:
    """``"better 1, no difference detected 3"`` (in a fixed order, zeros left out)."""
    order = ("better", "worse", "no difference detected")
    return ", ".join(f"{v} {verdicts.count(v)}" for v in order if verdicts.count(v))


def section_line(section: str, prefix: str) -> str | None:
    """The first line of BENCHMARKS.md section ``section`` that starts with ``prefix``.

    Re-rendering from a saved JSON keeps the machine line of the run that produced the
    numbers (older JSON files do not hold it), not the machine of the re-rendering.
    """
    path = REPO / "BENCHMARKS.md"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    m = re.search(
        rf"<!-- BEGIN {re.escape(section)} -->\n(.*?)<!-- END {re.escape(section)} -->",
        text,
        flags=re.S,
    )
    if m is None:
        return None
    return next((ln for ln in m.group(1).splitlines() if ln.startswith(prefix)), None)
