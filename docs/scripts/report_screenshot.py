"""Screenshot of the first screen of the demo report, for the README (docs/img/report.png).

    python docs/scripts/report_screenshot.py                 # runs the demo into a temp folder
    python docs/scripts/report_screenshot.py demo-output/    # uses an existing demo folder

Needs playwright and Debian's chromium (``apt-get install chromium``), like the browser tests.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def screenshot(page_path: Path, out: Path, *, width: int = 1280, height: int = 1000) -> None:
    """Save the first ``width`` x ``height`` pixels of a page as PNG."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        page.screenshot(path=str(out))
        browser.close()


def main(argv: list[str] | None = None) -> int:
    """Run the demo (or use the given folder) and save the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_output", nargs="?", type=Path, help="an existing demo folder")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "report.png")
    args = parser.parse_args(argv)
    if args.demo_output is not None:
        screenshot(args.demo_output / "report.html", args.out)
    else:
        import matplotlib

        matplotlib.use("Agg")
        from crowdmed.pipelines.demo import run_demo

        with tempfile.TemporaryDirectory() as tmp:
            run_demo(tmp)
            screenshot(Path(tmp) / "report.html", args.out)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
