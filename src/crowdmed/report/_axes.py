"""Figure and axes creation shared by the plots (matplotlib imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """``(figure, axes)``: a new constrained-layout figure, or the figure of ``ax`` when given."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("Plotting needs matplotlib: pip install 'crowdmed[report]'.") from exc
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.subplots()
    return ax.figure, ax
