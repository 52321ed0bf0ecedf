"""The report blocks: folded tables, galleries, lists and links, in HTML and Markdown."""

import pandas as pd
import pytest

from crowdmed.report import (
    Bullets,
    Details,
    Gallery,
    Image,
    Link,
    Section,
    render_html,
    render_markdown,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def test_blocks_in_html():
    table = pd.DataFrame({"reader": ["R1", "R2"], "dice": [0.91234, 0.5]})
    page = render_html(
        "T",
        [
            Section(
                "Summary",
                [
                    Bullets(["first <b>", "`code`"]),
                    Gallery([Image(PNG, alt="a"), Image(PNG, alt="b", caption="c & d")]),
                    Details("All readers <2>", [table, "note"]),
                    Link("tables/x y.csv", "x.csv", "one row per reader"),
                ],
            )
        ],
    )
    assert "<ul><li>first &lt;b&gt;</li><li><code>code</code></li></ul>" in page
    assert page.count('<div class="gallery"><figure>') == 1
    assert page.count("<figure>") == 2
    assert "<figcaption>c &amp; d</figcaption>" in page
    assert "<details><summary>All readers &lt;2&gt;</summary>" in page
    inside = page[page.index("<details>") : page.index("</details>")]
    assert "<td class=num>0.912</td>" in inside
    assert "<p>note</p>" in inside
    assert '<a href="tables/x y.csv">x.csv</a> one row per reader' in page


def test_blocks_in_markdown():
    md = render_markdown(
        "T",
        [
            Section(
                "S",
                [
                    Bullets(["one", "two"]),
                    Details("Folded", [pd.DataFrame({"a": [1]})]),
                    Link("a.csv", "a.csv", "(table)"),
                    Gallery([Image(PNG, alt="alt text", caption="Caption.")]),
                ],
            )
        ],
    )
    assert "- one\n- two" in md
    assert "**Folded**\n\n| a |\n|---:|\n| 1 |" in md
    assert "[a.csv](a.csv) (table)" in md
    assert "*Figure: Caption (embedded in the HTML report).*" in md


def test_nested_details_are_refused():
    inner = Details("inner", ["x"])
    with pytest.raises(TypeError, match=r"got Details\. .*\(not nested\) Details"):
        render_html("T", [Section("S", [Details("outer", [inner])])])
    with pytest.raises(TypeError, match=r"got Details\."):
        render_markdown("T", [Section("S", [Details("outer", [inner])])])
