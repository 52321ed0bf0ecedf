"""``crowdmed report FOLDER``: the report of aggregate / masks consensus / boxes fuse outputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdmed.pipelines.report import build_report


def _labels(path: Path) -> Path:
    """40 binary items, 4 annotators: 'good' agrees with gold, 'flip' says the opposite on a
    quarter, 'coin' answers at random; gold known for every item."""
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 40)
    rows = []
    for i, g in enumerate(gold):
        rows.append(("good", g))
        rows.append(("good2", g if i % 10 else 1 - g))
        rows.append(("flip", g if i % 4 else 1 - g))
        rows.append(("coin", int(rng.integers(0, 2))))
    table = pd.DataFrame(
        [(f"case{i // 4:02d}", a, lab, gold[i // 4]) for i, (a, lab) in enumerate(rows)],
        columns=["item", "annotator", "label", "gold"],
    )
    table.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One folder holding an aggregate run, a masks consensus run and a boxes fuse run."""
    from typer.testing import CliRunner

    from crowdmed.cli import app

    def invoke(*args):
        return CliRunner().invoke(app, [str(a) for a in args])

    root = tmp_path_factory.mktemp("runs")
    labels = _labels(root / "labels.csv")
    res = invoke(
        "aggregate", labels, "-m", "dawid-skene", "-o", root / "agg" / "consensus.csv",
        "-a", root / "agg" / "annotators.csv",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    masks = np.zeros((3, 12, 12), np.uint8)
    masks[0, 3:9, 3:9] = masks[1, 3:9, 4:10] = masks[2, 2:6, 2:6] = 1
    files = []
    for r, m in enumerate(masks):
        files.append(root / f"rater{r + 1}.npy")
        np.save(files[-1], m)
    res = invoke(
        "masks", "consensus", *files, "-m", "staple", "-o", root / "masks" / "staple.npy",
        "-r", root / "masks" / "raters.csv",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    box = [10.0, 10.0, 30.0, 30.0]
    boxes = pd.DataFrame(
        [
            ("img1", "A", "nodule", *box),
            ("img1", "B", "nodule", *[v + 1 for v in box]),
            ("img1", "C", "nodule", *[v + 2 for v in box]),
            ("img2", "A", "nodule", 5.0, 5.0, 15.0, 15.0),
            ("img2", "B", "nodule", 50.0, 50.0, 60.0, 60.0),
            ("img2", "C", "", None, None, None, None),
        ],
        columns=["image", "reader", "class", "xmin", "ymin", "xmax", "ymax"],
    )
    boxes.to_csv(root / "boxes.csv", index=False)
    res = invoke(
        "boxes", "fuse", root / "boxes.csv", "-o", root / "boxes" / "fused.csv",
        "--readers-out", root / "boxes" / "readers.csv",
        "--pairwise-out", root / "boxes" / "pairwise.csv",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return root


def test_report_names_method_items_and_top_annotator(folder, cli, tmp_path):
    out = tmp_path / "page" / "report.html"
    result = cli("report", folder, "--out", out)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    consensus = pd.read_csv(folder / "agg" / "consensus.csv")
    annotators = pd.read_csv(folder / "agg" / "annotators.csv")
    top = annotators.sort_values("spammer_score", ascending=False).iloc[0]
    low = annotators.sort_values("spammer_score").iloc[0]
    assert top["annotator"] in ("good", "good2")
    assert low["annotator"] == "coin"
    summary = page[page.index("<h2>Summary</h2>") : page.index("<h2>", page.index("</h2>"))]
    assert f"dawid-skene consensus of {len(consensus)} items" in summary
    assert f"Most reliable annotator: {top['annotator']}" in summary
    assert f"least reliable: {low['annotator']}" in summary
    accuracy = (consensus["label"] == consensus["gold"]).mean()
    assert f"accuracy {accuracy:.3f} against 40 gold items" in summary
    # masks: the median rater Dice from raters.csv; boxes: counts from fused.csv
    raters = pd.read_csv(folder / "masks" / "raters.csv")
    assert f"median Dice of {raters['dice_vs_consensus'].median():.3f}" in summary
    fused = pd.read_csv(folder / "boxes" / "fused.csv")
    assert f"fused into {len(fused)} consensus boxes" in summary
    assert f"{int((fused['n_readers'] == 3).sum())} marked by every reader" in summary
    # one self-contained file: figures embedded, links relative to the page, nothing fetched
    assert page.count('src="data:image/png;base64,') >= 3
    for remote in ("<script", "http://", "https://"):
        assert remote not in page
    for href in re.findall(r'<a href="([^"]+)"', page):
        assert (out.parent / href).is_file(), href
    assert "crowdmed aggregate: dawid-skene" in result.stderr


def test_default_out_is_folder_report_html(folder, cli):
    result = cli("report", folder)
    assert result.exit_code == 0, result.output
    assert (folder / "report.html").is_file()
    assert f"Report: {folder / 'report.html'}" in result.stdout
    report = build_report(folder, figures=False)
    assert [r.command for r in report.runs] == ["aggregate", "masks consensus", "boxes fuse"]
    assert report.runs[0].facts["n_items"] == 40
    assert report.runs[0].facts["n_annotators"] == 4


def test_unknown_folder_is_a_one_line_error(tmp_path, cli, user_error):
    user_error(cli("report", tmp_path / "missing"), r"`FOLDER` must be an existing folder")
    (tmp_path / "other.json").write_text('{"a": 1}', encoding="utf-8")
    user_error(cli("report", tmp_path), r"holds no run record of crowdmed aggregate")
    assert not (tmp_path / "report.html").exists()


def test_subprocess(folder, tmp_path):
    out = tmp_path / "r.html"
    proc = subprocess.run(
        [sys.executable, "-m", "crowdmed", "report", str(folder), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
