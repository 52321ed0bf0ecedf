"""Reports: tables, paragraphs and figures rendered to one self-contained HTML page.

* :func:`render_html` / :func:`render_markdown` turn a title and a list of :class:`Section`
  (paragraphs, ``DataFrame`` tables, :class:`Image` PNGs) into a page. No matplotlib needed.
* :mod:`crowdmed.report.figures` has the plots (``ax=None`` in, ``(fig, ax)`` out); they
  import matplotlib only when called (``pip install 'crowdmed[report]'``).
"""

from crowdmed.report.crowd import plot_spammer_scores
from crowdmed.report.figures import figure_to_png, plot_accuracy, plot_rating_spread
from crowdmed.report.html import Block, Image, Section, format_cell, render_html, render_markdown

__all__ = [
    "Block",
    "Image",
    "Section",
    "figure_to_png",
    "format_cell",
    "plot_accuracy",
    "plot_rating_spread",
    "plot_spammer_scores",
    "render_html",
    "render_markdown",
]
