"""Figures of the crowd loop (matplotlib, imported lazily)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["plot_spammer_scores"]


def plot_spammer_scores(
    annotators: pd.DataFrame,
    *,
    ax: Any = None,
    score: str = "spammer_score",
    quiz: str = "quiz_accuracy",
    kind: str | None = "kind",
) -> tuple[Any, Any]:
    """Spammer score of every annotator against their quiz accuracy (AggNet's Fig. 8).

    Args:
        annotators: One row per annotator with the ``score`` and ``quiz`` columns (and,
            optionally, a ``kind`` column used to colour the points, e.g. honest/spammer).
        ax: Matplotlib axes to draw on; a new figure when omitted.
        score: Column of the spammer score (``0`` spammer, ``1`` perfect).
        quiz: Column of the quiz accuracy ``γ``.
        kind: Column that groups the points; ``None`` or missing for one group.

    Returns:
        ``(fig, ax)``.

    Raises:
        ValueError: If a column is missing.
    """
    for col in (score, quiz):
        if col not in annotators.columns:
            raise ValueError(
                f"`annotators` needs a {col!r} column; columns are {list(annotators.columns)}."
            )
    from crowdmed.report._axes import new_axes

    fig, ax = new_axes(ax, (4.5, 4))
    groups = (
        annotators.groupby(kind, sort=True)
        if kind is not None and kind in annotators.columns
        else [("annotators", annotators)]
    )
    for name, g in groups:
        ax.scatter(g[quiz], g[score], label=str(name), s=28, alpha=0.85)
    ax.set_xlabel("quiz accuracy γ (gold questions)")
    ax.set_ylabel("spammer score (sensitivity + specificity − 1)²")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    x = annotators[quiz].to_numpy(dtype=float)
    y = annotators[score].to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() > 2 and np.std(x[ok]) > 0 and np.std(y[ok]) > 0:
        r = float(np.corrcoef(x[ok], y[ok])[0, 1])
        ax.set_title(f"Annotators (Pearson r = {r:.2f})")
    ax.legend(loc="upper left", fontsize="small")
    return fig, ax
