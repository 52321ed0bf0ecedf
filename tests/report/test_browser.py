"""The reports in a real browser (Playwright driving Debian's chromium).

Every figure loads, the page logs no console error, and at a phone width (375 px) and a
desktop width (1280 px) the text never scrolls sideways (wide tables scroll inside their own
box). Two pages: a reduced demo and ``crowdmed report`` on a small aggregate run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (test extra)")
pytest.importorskip("matplotlib", reason="the figures need matplotlib (report extra)")

ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
WIDTHS = (375, 1280)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """A reduced demo report and a folder report, written by the library."""
    import matplotlib

    matplotlib.use("Agg")
    from crowdmed.pipelines.demo import run_demo
    from crowdmed.pipelines.report import write_report

    root = tmp_path_factory.mktemp("pages")
    run_demo(
        root / "demo",
        datasets=["SP_amt", "MS", "lidc_malignancy"],
        methods=["majority-vote", "dawid-skene"],
        parts=["crowd", "masks"],
    )
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 30)
    rows = [
        (f"case{i}", a, g if rng.random() < acc else 1 - g, g)
        for i, g in enumerate(gold)
        for a, acc in (("r1", 0.95), ("r2", 0.8), ("r3", 0.5))
    ]
    labels = root / "labels.csv"
    pd.DataFrame(rows, columns=["item", "annotator", "label", "gold"]).to_csv(labels, index=False)
    from typer.testing import CliRunner

    from crowdmed.cli import app

    out = root / "agg"
    result = CliRunner().invoke(
        app, ["aggregate", str(labels), "-o", str(out / "c.csv"), "-a", str(out / "a.csv")]
    )
    assert result.exit_code == 0, result.output
    write_report(out)
    return {"demo": root / "demo" / "report.html", "folder": out / "report.html"}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.mark.parametrize("name", ["demo", "folder"])
@pytest.mark.parametrize("width", WIDTHS)
def test_page_renders(pages, browser, name, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(pages[name].as_uri(), wait_until="load")
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.complete, e.naturalWidth, e.alt])"
    )
    assert len(images) >= 3
    for complete, natural_width, alt in images:
        assert complete, alt
        assert natural_width > 0, alt
    assert errors == []
    # one file: nothing but the page itself (and its data: URIs) is requested
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= width, f"{name} scrolls sideways at {width} px: {scroll_width} px"
    # the summary comes first, with its figures
    first = page.eval_on_selector("h2", "e => e.textContent")
    assert first == "Summary"
    page.close()


def test_folded_tables_open(pages, browser):
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(pages["demo"].as_uri(), wait_until="load")
    details = page.locator("details").first
    assert details.evaluate("e => e.open") is False
    details.locator("summary").click()
    assert details.evaluate("e => e.open") is True
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 375
    page.close()
