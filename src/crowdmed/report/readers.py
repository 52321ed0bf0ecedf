"""Readers against a reference: operating points in ROC space and reliability intervals.

* :func:`plot_operating_points`: the annotators as points in ROC space (``1 - specificity``,
  ``sensitivity``) with their intervals (e.g. from
  :func:`crowdmed.quality.reader_operating_points`), next to the consensus labels' points.
* :func:`plot_reliability`: a forest plot, one interval per annotator (e.g. gold accuracy).

The plots import matplotlib only when called (``pip install 'crowdmed[report]'``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["plot_operating_points", "plot_reliability"]


def plot_operating_points(
    points: pd.DataFrame,
    *,
    consensus: pd.DataFrame | None = None,
    min_items: int = 1,
    ax: Any = None,
    title: str | None = None,
) -> tuple[Any, Any]:
    """Annotators as points in ROC space with their 95 % intervals, next to the consensus.

    Args:
        points: One row per annotator with ``sensitivity`` and ``specificity`` (e.g. from
            :func:`crowdmed.quality.reader_operating_points`); ``sensitivity_low``/``_high`` and
            ``specificity_low``/``_high`` columns add error bars; ``n_positive`` and
            ``n_negative`` columns filter with ``min_items``.
        consensus: One row per consensus (index = its name, e.g. ``majority vote``) with
            ``sensitivity`` and ``specificity``; drawn as large labelled markers.
        min_items: Annotators with fewer positive or negative reference items are left out.
        ax: Axes to draw into; a new figure when omitted.
        title: Axes title.

    Returns:
        ``(fig, ax)``.

    Raises:
        ValueError: If a column is missing.

    Examples:
        >>> import numpy as np
        >>> from crowdmed.quality import reader_operating_points
        >>> labels = np.array([[1, 1], [1, 0], [0, 0], [0, 1]])
        >>> t = reader_operating_points(labels, np.array([1, 1, 0, 0]))
        >>> fig, ax = plot_operating_points(t)
        >>> ax.get_xlabel()
        '1 − specificity (false positive rate)'
    """
    for col in ("sensitivity", "specificity"):
        if col not in points.columns:
            raise ValueError(
                f"`points` needs a {col!r} column; columns are {list(points.columns)}."
            )
    from crowdmed.report._axes import new_axes

    fig, ax = new_axes(ax, (4.6, 4.3))
    shown = points
    for col in ("n_positive", "n_negative"):
        if col in shown.columns:
            shown = shown[shown[col] >= min_items]
    shown = shown.dropna(subset=["sensitivity", "specificity"])
    x = 1 - shown["specificity"].to_numpy(dtype=float)
    y = shown["sensitivity"].to_numpy(dtype=float)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    # Intervals drawn from their ends: a Jeffreys interval need not contain its point
    # estimate at 0 or 1 (e.g. all positives found).
    style = {"color": "tab:blue", "alpha": 0.25, "lw": 0.8}
    if {"sensitivity_low", "sensitivity_high"} <= set(shown.columns) and len(shown):
        ax.vlines(
            x,
            shown["sensitivity_low"].to_numpy(dtype=float),
            shown["sensitivity_high"].to_numpy(dtype=float),
            **style,
        )
    if {"specificity_low", "specificity_high"} <= set(shown.columns) and len(shown):
        ax.hlines(
            y,
            1 - shown["specificity_high"].to_numpy(dtype=float),
            1 - shown["specificity_low"].to_numpy(dtype=float),
            **style,
        )
    ax.scatter(x, y, s=18, color="tab:blue", alpha=0.8, label=f"annotators ({len(shown)})")
    if consensus is not None and len(consensus):
        markers = ["*", "D", "P", "X", "s", "^"]
        colours = ["tab:red", "tab:green", "tab:purple", "tab:orange", "black", "tab:brown"]
        for i, (name, row) in enumerate(consensus.iterrows()):
            ax.scatter(
                1 - float(row["specificity"]),
                float(row["sensitivity"]),
                s=140 if markers[i % 6] == "*" else 60,
                marker=markers[i % len(markers)],
                color=colours[i % len(colours)],
                edgecolors="white",
                linewidths=0.8,
                zorder=5,
                label=str(name),
            )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("1 − specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title, fontsize="medium")
    return fig, ax


def plot_reliability(
    table: pd.DataFrame,
    *,
    value: str,
    low: str,
    high: str,
    label: str | None = None,
    max_rows: int = 30,
    ax: Any = None,
) -> tuple[Any, Any]:
    """Forest plot: one point and interval per row, sorted by value (lowest at the top).

    Args:
        table: One row per annotator (the index names them) with the three columns below.
        value: Column of the estimate (e.g. ``gold_accuracy``).
        low: Column of the interval's lower end.
        high: Column of the interval's upper end.
        label: x-axis label; ``value`` when omitted.
        max_rows: Show at most this many rows: the lowest values (the rows to look at).
        ax: Axes to draw into; a new figure when omitted.

    Returns:
        ``(fig, ax)``.

    Raises:
        ValueError: If a column is missing or no value is finite.

    Examples:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"acc": [0.9, 0.6], "lo": [0.8, 0.4], "hi": [0.95, 0.8]},
        ...                  index=["a", "b"])
        >>> fig, ax = plot_reliability(t, value="acc", low="lo", high="hi")
        >>> [tick.get_text() for tick in ax.get_yticklabels()]
        ['b', 'a']
    """
    missing = [c for c in (value, low, high) if c not in table.columns]
    if missing:
        raise ValueError(f"`table` must have the columns {[value, low, high]}; missing {missing}.")
    data = table[np.isfinite(pd.to_numeric(table[value], errors="coerce"))]
    if data.empty:
        raise ValueError(f"`table` must have at least one finite {value!r}; got none.")
    data = data.sort_values(value, kind="stable").head(max_rows)
    from crowdmed.report._axes import new_axes

    fig, ax = new_axes(ax, (4.8, max(2.2, 0.22 * len(data) + 1.2)))
    y = np.arange(len(data))[::-1]
    v = data[value].to_numpy(dtype=float)
    ax.hlines(y, data[low].to_numpy(float), data[high].to_numpy(float), color="tab:blue", lw=1)
    ax.plot(v, y, "o", ms=4, color="tab:blue")
    ax.set_yticks(y)
    ax.set_yticklabels([str(i) for i in data.index], fontsize="small")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(label or value)
    ax.grid(axis="x", alpha=0.3)
    return fig, ax
