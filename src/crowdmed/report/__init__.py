"""Reports: tables, paragraphs and figures rendered to one self-contained HTML page.

* :func:`render_html` / :func:`render_markdown` turn a title and a list of :class:`Section`
  (paragraphs, ``DataFrame`` tables, :class:`Image` PNGs, galleries, lists, links to files
  and folded :class:`Details`) into a page. No matplotlib needed.
* :mod:`crowdmed.report.figures`, :mod:`crowdmed.report.readers` and
  :mod:`crowdmed.report.crowd` have the plots (``ax=None`` in, ``(fig, ax)`` out); they
  import matplotlib only when called (``pip install 'crowdmed[report]'``).
"""

from crowdmed.report.crowd import plot_spammer_scores
from crowdmed.report.figures import (
    figure_to_png,
    plot_accuracy,
    plot_detection_map,
    plot_mask_raters,
    plot_rating_spread,
)
from crowdmed.report.html import (
    Block,
    Bullets,
    Details,
    Gallery,
    Image,
    Link,
    Section,
    format_cell,
    render_html,
    render_markdown,
)
from crowdmed.report.readers import plot_operating_points, plot_reliability

__all__ = [
    "Block",
    "Bullets",
    "Details",
    "Gallery",
    "Image",
    "Link",
    "Section",
    "figure_to_png",
    "format_cell",
    "plot_accuracy",
    "plot_detection_map",
    "plot_mask_raters",
    "plot_operating_points",
    "plot_rating_spread",
    "plot_reliability",
    "plot_spammer_scores",
    "render_html",
    "render_markdown",
]
