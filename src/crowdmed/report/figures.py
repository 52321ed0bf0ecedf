"""Figures for reports. matplotlib is optional: ``pip install 'crowdmed[report]'``.

Every plot function takes ``ax=None`` and returns ``(fig, ax)``; none calls ``plt.show()``.
When ``ax`` is omitted the figure is a bare :class:`matplotlib.figure.Figure`, made without
``pyplot``: it selects no backend, opens no window, is not kept alive by pyplot's figure
manager (no ``plt.close`` needed) and saves with ``fig.savefig`` (PNG through Agg). Pass an
``ax`` from ``plt.subplots()`` to draw into a pyplot figure instead.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crowdmed._validation import check_labels
from crowdmed.report._axes import new_axes
from crowdmed.typing import LabelsLike

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "figure_to_png",
    "plot_accuracy",
    "plot_counts",
    "plot_detection_map",
    "plot_histograms",
    "plot_mask_raters",
    "plot_rating_spread",
]


def figure_to_png(fig: Figure, *, dpi: int = 110) -> bytes:
    r"""Render a figure to PNG bytes (for :class:`crowdmed.report.html.Image`).

    Args:
        fig: The figure.
        dpi: Resolution in dots per inch.

    Returns:
        The PNG file content.

    Examples:
        >>> import pandas as pd
        >>> fig, ax = plot_accuracy(pd.DataFrame(
        ...     {"dataset": ["A", "A"], "method": ["mv", "ds"], "accuracy": [0.8, 0.9]}))
        >>> figure_to_png(fig)[:4]
        b'\x89PNG'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot_accuracy(
    accuracy: pd.DataFrame,
    *,
    ax: Axes | None = None,
    value: str = "accuracy",
) -> tuple[Figure, Axes]:
    """Grouped bar chart of a score per data set (groups) and method (bars).

    Args:
        accuracy: Long table with columns ``dataset``, ``method`` and ``value``; one row per
            (data set, method). Rows whose value is ``NaN`` (e.g. a method that does not apply)
            are left out.
        ax: Axes to draw into; a new figure when omitted.
        value: Name of the score column.

    Returns:
        ``(fig, ax)``.

    Raises:
        ValueError: If a column is missing or no value is finite.
        ImportError: If matplotlib is not installed.

    Examples:
        >>> import pandas as pd
        >>> table = pd.DataFrame({"dataset": ["A", "A", "B", "B"],
        ...                       "method": ["mv", "ds", "mv", "ds"],
        ...                       "accuracy": [0.8, 0.9, 0.7, float("nan")]})
        >>> fig, ax = plot_accuracy(table)
        >>> len(ax.patches), ax.get_ylabel()
        (3, 'accuracy')
    """
    missing = [c for c in ("dataset", "method", value) if c not in accuracy.columns]
    if missing:
        raise ValueError(
            f"`accuracy` must have the columns ['dataset', 'method', {value!r}]; missing {missing}."
        )
    data = accuracy[np.isfinite(pd.to_numeric(accuracy[value], errors="coerce"))]
    if data.empty:
        raise ValueError(f"`accuracy` must have at least one finite {value!r}; got none.")
    datasets = list(pd.unique(data["dataset"]))
    methods = list(pd.unique(data["method"]))
    width = 0.8 / len(methods)
    fig, ax = new_axes(ax, (max(6.0, 1.1 * len(datasets) + 2.0), 3.8))
    x = np.arange(len(datasets))
    for j, method in enumerate(methods):
        rows = data[data["method"] == method].set_index("dataset")[value]
        pos = [i for i, d in enumerate(datasets) if d in rows.index]
        heights = [float(rows[datasets[i]]) for i in pos]
        ax.bar(x[pos] + (j - (len(methods) - 1) / 2) * width, heights, width, label=str(method))
    low = float(data[value].min())
    ax.set_ylim(max(0.0, np.floor((low - 0.05) * 20) / 20), 1.0 if low <= 1 else None)
    ax.set_xticks(x)
    ax.set_xticklabels(datasets, rotation=20, ha="right")
    ax.set_ylabel(value)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method")
    return fig, ax


def plot_rating_spread(labels: LabelsLike, *, ax: Axes | None = None) -> tuple[Figure, Axes]:
    """How far apart the ratings of each item are: counts of ``max - min`` per item.

    Bars are stacked by the number of labels of the item. With numeric ``classes`` (e.g. a
    1-5 score) the spread is in class values; otherwise in class indices. Items with a single
    label are left out (no spread).

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation, or a long
            ``DataFrame``.
        ax: Axes to draw into; a new figure when omitted.

    Returns:
        ``(fig, ax)``.

    Raises:
        ValueError: If no item has two or more labels.
        ImportError: If matplotlib is not installed.

    Examples:
        >>> import numpy as np
        >>> fig, ax = plot_rating_spread(np.array([[0, 0, 1], [2, 0, -1], [1, 1, -1]]))
        >>> ax.get_xlabel()
        'rating spread (max - min)'
    """
    cl = check_labels(labels, min_classes=1)
    classes = np.asarray(cl.classes)
    if np.issubdtype(classes.dtype, np.number) and classes.dtype != bool:
        values = classes.astype(np.float64)[cl.labels]
    else:
        values = cl.labels.astype(np.float64)
    n = cl.n_items
    hi = np.full(n, -np.inf)
    lo = np.full(n, np.inf)
    np.maximum.at(hi, cl.items, values)
    np.minimum.at(lo, cl.items, values)
    count = cl.labels_per_item()
    keep = count >= 2
    if not keep.any():
        raise ValueError("`labels` must have at least one item with two or more labels; got none.")
    table = pd.crosstab(pd.Series(hi[keep] - lo[keep], name="spread"), count[keep])
    fig, ax = new_axes(ax, (6.0, 3.6))
    bottom = np.zeros(len(table))
    xs = np.arange(len(table))
    for n_labels in table.columns:
        heights = table[n_labels].to_numpy(dtype=float)
        ax.bar(xs, heights, 0.7, bottom=bottom, label=str(n_labels))
        bottom += heights
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{v:g}" for v in table.index])
    ax.set_xlabel("rating spread (max - min)")
    ax.set_ylabel("items")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", title="labels per item", title_fontsize="small")
    return fig, ax


def plot_mask_raters(
    masks: Any,
    posterior: Any | None = None,
    *,
    spacing: tuple[float, float] | None = None,
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """Outline every rater's 2-D mask, optionally over a consensus probability map.

    Args:
        masks: ``(n_raters, H, W)`` binary masks of one slice.
        posterior: ``(H, W)`` consensus probability (e.g. STAPLE's) drawn in grey scale.
        spacing: Pixel size ``(row, column)`` in mm, for the aspect ratio and axis units.
        ax: Axes to draw into; a new figure when omitted.

    Returns:
        ``(fig, ax)``.

    Examples:
        >>> import numpy as np
        >>> m = np.zeros((2, 8, 8), bool); m[0, 2:6, 2:6] = m[1, 3:7, 2:6] = True
        >>> fig, ax = plot_mask_raters(m, m.mean(axis=0))
        >>> len(ax.get_legend().get_texts())
        2
    """
    stack = np.asarray(masks).astype(bool)
    if stack.ndim != 3:
        raise ValueError(f"`masks` must have shape (n_raters, H, W); got {stack.shape}.")
    fig, ax = new_axes(ax, (4.8, 4.2))
    h, w = stack.shape[1:]
    dy, dx = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    extent = (0.0, w * dx, h * dy, 0.0)
    if posterior is not None:
        shown = ax.imshow(
            np.asarray(posterior, dtype=float), cmap="gray", vmin=0, vmax=1, extent=extent
        )
        fig.colorbar(shown, ax=ax, label="consensus probability", shrink=0.8)
    from matplotlib.lines import Line2D

    colours = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan"]
    handles = []
    ys, xs = (np.arange(h) + 0.5) * dy, (np.arange(w) + 0.5) * dx
    for r, mask in enumerate(stack):
        colour = colours[r % len(colours)]
        if mask.any() and not mask.all():
            ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors=colour, linewidths=1.5)
        handles.append(Line2D([], [], color=colour, label=f"rater {r + 1}"))
    ax.legend(handles=handles, loc="upper right", fontsize="small")
    ax.set_xlabel("mm" if spacing is not None else "pixel")
    ax.set_ylabel("mm" if spacing is not None else "pixel")
    return fig, ax


def plot_detection_map(
    image: Any,
    prob_map: Any,
    *,
    candidates: pd.DataFrame | None = None,
    points: pd.DataFrame | None = None,
    threshold: float | None = None,
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """A field with its detection map, the candidates and the reference points.

    Args:
        image: ``(H, W, 3)`` RGB field.
        prob_map: ``(H, W)`` detection probability, drawn semi-transparently over the field.
        candidates: Detections with columns ``x, y, score``; those at or above ``threshold``
            (all when ``threshold`` is None) are drawn as crosses.
        points: Reference points with columns ``x, y`` (drawn as circles).
        threshold: Operating point for the candidates shown.
        ax: Axes to draw into; a new figure when omitted.

    Returns:
        ``(fig, ax)``.

    Examples:
        >>> import numpy as np, pandas as pd
        >>> img = np.zeros((16, 16, 3), np.uint8); pm = np.zeros((16, 16)); pm[8, 8] = 1
        >>> fig, ax = plot_detection_map(img, pm, points=pd.DataFrame({"x": [8], "y": [8]}))
        >>> ax.get_title()
        ''
    """
    fig, ax = new_axes(ax, (4.8, 4.2))
    field = np.asarray(image)
    ax.imshow(field)
    prob = np.asarray(prob_map, dtype=float)
    # Near-zero probabilities stay transparent so the field remains visible.
    shown = ax.imshow(np.ma.masked_less(prob, 0.02), cmap="magma", vmin=0, vmax=1, alpha=0.55)
    fig.colorbar(shown, ax=ax, label="detection probability", shrink=0.8)
    if points is not None and len(points):
        ax.scatter(
            points["x"],
            points["y"],
            s=120,
            facecolors="none",
            edgecolors="cyan",
            linewidths=1.5,
            label="reference",
        )
    if candidates is not None and len(candidates):
        kept = candidates if threshold is None else candidates[candidates["score"] >= threshold]
        ax.scatter(kept["x"], kept["y"], marker="x", s=40, c="white", label="detections")
    if (points is not None and len(points)) or (candidates is not None and len(candidates)):
        ax.legend(loc="lower right", fontsize="small")
    ax.set_axis_off()
    return fig, ax


def plot_histograms(
    values: dict[str, Any],
    *,
    bins: Any = 20,
    xlabel: str = "",
    ylabel: str = "count",
    legend: bool = True,
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """Overlaid histograms, one per named sample (e.g. Dice between readers and vs consensus).

    Args:
        values: Name -> 1-D array of values; non-finite values are left out.
        bins: Number of bins or bin edges (``numpy.histogram`` semantics), shared by all.
        xlabel: x-axis label.
        ylabel: y-axis label.
        legend: Name the samples in a legend.
        ax: Axes to draw into; a new figure when omitted.

    Returns:
        ``(fig, ax)``.

    Examples:
        >>> import numpy as np
        >>> fig, ax = plot_histograms({"a": np.array([0.1, 0.2]), "b": np.array([0.9])}, bins=4)
        >>> [t.get_text() for t in ax.get_legend().get_texts()]
        ['a', 'b']
    """
    fig, ax = new_axes(ax, (5.2, 3.6))
    for name, sample in values.items():
        data = np.asarray(sample, dtype=float)
        ax.hist(data[np.isfinite(data)], bins=bins, alpha=0.6, label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend:
        ax.legend(fontsize="small", loc="upper left")
    return fig, ax


def plot_counts(
    counts: pd.Series,
    *,
    xlabel: str = "",
    ylabel: str = "",
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """One bar per entry of a Series (index = bar labels, values = heights).

    Args:
        counts: The heights, labelled by the index.
        xlabel: x-axis label.
        ylabel: y-axis label.
        ax: Axes to draw into; a new figure when omitted.

    Returns:
        ``(fig, ax)``.

    Examples:
        >>> import pandas as pd
        >>> fig, ax = plot_counts(pd.Series([3, 1], index=["one reader", "two readers"]))
        >>> len(ax.patches)
        2
    """
    fig, ax = new_axes(ax, (5.0, 3.6))
    ax.bar([str(i) for i in counts.index], counts.to_numpy(dtype=float), color="tab:blue")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if len(counts) > 6:
        ax.tick_params(axis="x", labelrotation=45)
    return fig, ax
