"""The documentation site: ``mkdocs build --strict`` and the executable tutorials.

Skipped with the reason when the docs tools are missing (``pip install 'crowdmed[docs]'``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
SUBPACKAGES = [
    "data", "simulate", "aggregation", "quality", "metrics", "nn", "training", "pathology",
    "crowdsourcing", "pipelines", "report", "cli",
]  # fmt: skip


def _needs(module: str) -> None:
    pytest.importorskip(module, reason=f"needs {module}: pip install 'crowdmed[docs]'")


def test_mkdocs_build_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        _needs(module)
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(site)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the API reference is generated from the docstrings
    page = (site / "api" / "aggregation" / "index.html").read_text(encoding="utf-8")
    assert "crowdmed.aggregation.DawidSkene" in page
    assert "https://doi.org/10.2307/2346806" in page  # the paper, from the class docstring
    assert (site / "tutorials" / "consensus" / "index.html").is_file()


def test_every_subpackage_has_an_api_page():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for name in SUBPACKAGES:
        assert (DOCS / "api" / f"{name}.md").is_file(), name
        assert f"api/{name}.md" in nav, name


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch):
    """Every code cell of the Markdown notebook runs, in order, in one namespace."""
    jupytext = pytest.importorskip(
        "jupytext", reason="needs jupytext: pip install 'crowdmed[docs]'"
    )
    pytest.importorskip("matplotlib", reason="the tutorials draw figures (report extra)")
    notebook = jupytext.read(path)
    cells = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert cells, f"{path.name} has no code cell"
    monkeypatch.chdir(tmp_path)  # files the tutorial writes land here
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    for i, source in enumerate(cells):
        code = compile(source, f"{path.name}[cell {i}]", "exec")
        exec(code, namespace)


def test_readme_links_to_the_docs_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?:docs/)[^)#\s]+)", readme)
    assert links, "README links to no docs page"
    for link in links:
        assert (ROOT / link).exists(), link
