"""Render tables, paragraphs and figures into one self-contained HTML page (or Markdown).

A report is a title and a list of :class:`Section`; each section holds blocks in order:

* ``str``: a paragraph. All text is escaped; a span in backticks is shown as code.
* ``pandas.DataFrame``: a table. Floats are formatted with ``float_format`` and missing
  values show as ``na_rep``; the index is shown unless it is a default ``RangeIndex``.
* :class:`Image`: PNG bytes, embedded as a base64 ``data:`` URI (HTML) or referred to by its
  caption (Markdown, which cannot embed images portably).
* :class:`Gallery`: several images side by side (one column on a phone).
* :class:`Bullets`: a bulleted list of paragraphs.
* :class:`Link`: a link to a file next to the report (e.g. a CSV table).
* :class:`Details`: blocks folded under a one-line summary (``<details>``), for long tables.

Nothing here imports matplotlib; see :mod:`crowdmed.report.figures` for the plots.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "Block",
    "Bullets",
    "Details",
    "Gallery",
    "Image",
    "Link",
    "Section",
    "format_cell",
    "render_html",
    "render_markdown",
]


@dataclass(frozen=True)
class Image:
    """A PNG image for a report.

    Attributes:
        png: The PNG file content.
        alt: Alternative text (what the image shows).
        caption: Caption shown under the image.
    """

    png: bytes
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Gallery:
    """Images shown side by side, wrapping to one column on a narrow screen.

    Attributes:
        images: The images, in order.
    """

    images: Sequence[Image]


@dataclass(frozen=True)
class Bullets:
    """A bulleted list; each item is a paragraph (backticks mark code).

    Attributes:
        items: The items, in order.
    """

    items: Sequence[str]


@dataclass(frozen=True)
class Link:
    """A link to a file next to the report (relative ``href``), with a sentence around it.

    Attributes:
        href: Relative path of the file, e.g. ``"accuracy.csv"``.
        text: Text of the link.
        note: Text after the link.
    """

    href: str
    text: str
    note: str = ""


@dataclass(frozen=True)
class Details:
    """Blocks folded under a one-line summary (an HTML ``<details>`` element).

    Attributes:
        summary: The line shown while folded.
        blocks: Paragraphs, tables and images shown when unfolded (no nested ``Details``).
    """

    summary: str
    blocks: Sequence[Any] = field(default_factory=tuple)


#: One block of a section: a paragraph, a table, an image, a gallery, a list, a link or a
#: folded group of blocks.
Block = str | pd.DataFrame | Image | Gallery | Bullets | Link | Details


@dataclass(frozen=True)
class Section:
    """A heading and its blocks, rendered in order.

    Attributes:
        heading: Section title.
        blocks: Paragraphs (``str``), tables (``DataFrame``) and images (:class:`Image`).
    """

    heading: str
    blocks: Sequence[Block] = field(default_factory=tuple)


def format_cell(value: Any, float_format: str = "{:.3f}", na_rep: str = "–") -> str:
    """Format one table cell as plain text (not escaped).

    Args:
        value: The cell value.
        float_format: Format string for non-integer floats.
        na_rep: Text for ``None``, ``NaN`` and ``NaT``.

    Returns:
        The text.

    Examples:
        >>> format_cell(0.87666), format_cell(3), format_cell(float("nan")), format_cell(True)
        ('0.877', '3', '–', 'True')
    """
    if value is None:
        return na_rep
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        return na_rep if math.isnan(v) else float_format.format(v)
    try:
        if pd.isna(value):
            return na_rep
    except (TypeError, ValueError):  # list-like cells
        pass
    return str(value)


def _table_parts(
    df: pd.DataFrame, float_format: str, na_rep: str
) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, formatted rows and a numeric flag per column (index first when shown)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"A table must be a pandas DataFrame; got {type(df).__name__}.")
    show_index = not isinstance(df.index, pd.RangeIndex) or df.index.name is not None
    header = [format_cell(c, float_format, na_rep) for c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    columns = [df[c].tolist() for c in df.columns]
    if show_index:
        header = [format_cell(df.index.name or "", float_format, na_rep), *header]
        numeric = [pd.api.types.is_numeric_dtype(df.index), *numeric]
        columns = [df.index.tolist(), *columns]
    rows = [[format_cell(col[i], float_format, na_rep) for col in columns] for i in range(len(df))]
    return header, rows, numeric


_CODE = re.compile(r"`([^`]+)`")


def _paragraph_html(text: str) -> str:
    return _CODE.sub(r"<code>\1</code>", html.escape(text, quote=True))


def _table_html(df: pd.DataFrame, float_format: str, na_rep: str) -> str:
    header, rows, numeric = _table_parts(df, float_format, na_rep)

    def cells(values: list[str], tag: str) -> str:
        return "".join(
            f"<{tag}{' class=num' if num else ''}>{html.escape(v, quote=True)}</{tag}>"
            for v, num in zip(values, numeric, strict=True)
        )

    body = "\n".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return (
        f'<div class="table-wrap"><table>\n<thead><tr>{cells(header, "th")}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody></table></div>"
    )


def _image_html(image: Image) -> str:
    if not isinstance(image.png, (bytes, bytearray)) or not image.png.startswith(b"\x89PNG"):
        raise ValueError("`Image.png` must hold the bytes of a PNG file; got something else.")
    data = base64.b64encode(bytes(image.png)).decode("ascii")
    caption = f"<figcaption>{_paragraph_html(image.caption)}</figcaption>" if image.caption else ""
    return (
        f'<figure><img src="data:image/png;base64,{data}" '
        f'alt="{html.escape(image.alt, quote=True)}">{caption}</figure>'
    )


def _bad_block(block: Any) -> TypeError:
    return TypeError(
        "A section block must be a str, a pandas DataFrame or an Image; got "
        f"{type(block).__name__}. Gallery, Bullets, Link and (not nested) Details are "
        "accepted too."
    )


def _block_html(block: Any, float_format: str, na_rep: str, *, nested: bool = False) -> str:
    if isinstance(block, str):
        return f"<p>{_paragraph_html(block)}</p>"
    if isinstance(block, pd.DataFrame):
        return _table_html(block, float_format, na_rep)
    if isinstance(block, Image):
        return _image_html(block)
    if isinstance(block, Gallery):
        figures = "".join(_image_html(image) for image in block.images)
        return f'<div class="gallery">{figures}</div>'
    if isinstance(block, Bullets):
        items = "".join(f"<li>{_paragraph_html(item)}</li>" for item in block.items)
        return f"<ul>{items}</ul>"
    if isinstance(block, Link):
        note = f" {_paragraph_html(block.note)}" if block.note else ""
        href = html.escape(block.href, quote=True)
        return f'<p><a href="{href}">{html.escape(block.text, quote=True)}</a>{note}</p>'
    if isinstance(block, Details) and not nested:
        inner = "\n".join(_block_html(b, float_format, na_rep, nested=True) for b in block.blocks)
        return f"<details><summary>{_paragraph_html(block.summary)}</summary>\n{inner}\n</details>"
    raise _bad_block(block)


_STYLE = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1b1f24; background: #fff; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de;
     padding-bottom: 0.2rem; }
p, li, figcaption, summary, h1, h2 { overflow-wrap: anywhere; }
p.subtitle { color: #57606a; margin-top: 0; }
code { background: #f3f4f6; padding: 0 0.25em; border-radius: 3px; font-size: 0.92em; }
a { color: #0969da; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: 0.6rem 0 1rem; }
table { border-collapse: collapse; font-size: 0.88rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.55rem; text-align: left; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
figure { margin: 1rem 0; max-width: 100%; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #57606a; font-size: 0.88rem; }
.gallery { display: grid; gap: 0.5rem 1.25rem;
           grid-template-columns: repeat(auto-fit, minmax(min(100%, 360px), 1fr)); }
.gallery figure { margin: 0.5rem 0; }
details { margin: 0.6rem 0 1rem; border: 1px solid #d0d7de; border-radius: 6px;
          padding: 0.3rem 0.75rem; }
details > summary { cursor: pointer; color: #57606a; }
details[open] > summary { margin-bottom: 0.4rem; }
ul { padding-left: 1.3rem; }
"""


def render_html(
    title: str,
    sections: Sequence[Section],
    *,
    subtitle: str = "",
    float_format: str = "{:.3f}",
    na_rep: str = "–",
) -> str:
    """Render a report as one self-contained HTML page (inline CSS, images as base64).

    Args:
        title: Page title and top heading.
        sections: The sections, in order.
        subtitle: Line under the title (e.g. version and date).
        float_format: Format string for non-integer floats in tables.
        na_rep: Text for missing table values.

    Returns:
        The HTML document.

    Raises:
        TypeError: If a block is not one of the :data:`Block` types.
        ValueError: If an :class:`Image` does not hold PNG bytes.

    Examples:
        >>> import pandas as pd
        >>> page = render_html(
        ...     "Demo <1>",
        ...     [Section("Scores", ["Higher is `better`.", pd.DataFrame({"acc": [0.91234]})])],
        ... )
        >>> "<title>Demo &lt;1&gt;</title>" in page, "<code>better</code>" in page
        (True, True)
        >>> "<td class=num>0.912</td>" in page
        True
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title, quote=True)}</title>",
        f"<style>{_STYLE}</style></head>",
        "<body><main>",
        f"<h1>{html.escape(title, quote=True)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="subtitle">{_paragraph_html(subtitle)}</p>')
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.heading, quote=True)}</h2>")
        parts += [_block_html(block, float_format, na_rep) for block in section.blocks]
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table_markdown(df: pd.DataFrame, float_format: str, na_rep: str) -> str:
    header, rows, numeric = _table_parts(df, float_format, na_rep)
    lines = [
        "| " + " | ".join(_md_escape(h) for h in header) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(_md_escape(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(
    title: str,
    sections: Sequence[Section],
    *,
    subtitle: str = "",
    float_format: str = "{:.3f}",
    na_rep: str = "–",
) -> str:
    r"""Render the same report as GitHub-flavoured Markdown.

    Paragraphs are written as given (they may use Markdown); table cells are escaped.
    Images are replaced by their caption, with a pointer to the HTML report.

    Args:
        title: Top heading.
        sections: The sections, in order.
        subtitle: Line under the title.
        float_format: Format string for non-integer floats in tables.
        na_rep: Text for missing table values.

    Returns:
        The Markdown text.

    Raises:
        TypeError: If a block is not one of the :data:`Block` types.

    Examples:
        >>> import pandas as pd
        >>> print(render_markdown("Demo", [Section("Scores", [pd.DataFrame({"a|b": [1.5]})])]))
        # Demo
        <BLANKLINE>
        ## Scores
        <BLANKLINE>
        | a\|b |
        |---:|
        | 1.500 |
        <BLANKLINE>
    """
    out = [f"# {title}", ""]
    if subtitle:
        out += [subtitle, ""]
    for section in sections:
        out += [f"## {section.heading}", ""]
        for block in section.blocks:
            out += [*_block_markdown(block, float_format, na_rep), ""]
    return "\n".join(out)


def _block_markdown(
    block: Any, float_format: str, na_rep: str, *, nested: bool = False
) -> list[str]:
    if isinstance(block, str):
        return [block]
    if isinstance(block, pd.DataFrame):
        return [_table_markdown(block, float_format, na_rep)]
    if isinstance(block, Image):
        text = (block.caption or block.alt).rstrip(". ")
        return [f"*Figure: {text} (embedded in the HTML report).*"]
    if isinstance(block, Gallery):
        return [line for image in block.images for line in _block_markdown(image, "", "")]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items]
    if isinstance(block, Link):
        return [f"[{block.text}]({block.href})" + (f" {block.note}" if block.note else "")]
    if isinstance(block, Details) and not nested:
        lines = [f"**{block.summary}**", ""]
        for inner in block.blocks:
            lines += [*_block_markdown(inner, float_format, na_rep, nested=True), ""]
        return lines[:-1]
    raise _bad_block(block)
