"""Input files read as written: a property test of the table readers and a corpus of odd inputs.

The property: for any text ids (leading zeros, ``1.0``, ``NA``, unicode, spaces, commas,
quotes) and any mix of labels and missing markers (``-1``, empty), every reader returns the
ids byte for byte, in order of first appearance, and the labels without the missing ones. The
corpus replays odd inputs through ``crowdmed aggregate``: exit 0 with the right result, or exit
2 with one line naming the file and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from crowdmed.cli import app
from crowdmed.data.boxes import read_boxes
from crowdmed.data.io import read_labels, read_wide

# ids: any printable text, not empty (empty is missing), no control characters
ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=6
).filter(lambda s: s.strip() != "" or s == " ")
tricky_ids = st.sampled_from(["007", "7", "1", "01", "1.0", "1e3", "NA", "null", "nan", "-1", "é"])
any_id = st.one_of(tricky_ids, ids)
labels = st.sampled_from(["0", "1", "2", "", "-1", "1.0"])  # "" and "-1" are missing


@st.composite
def long_tables(draw: Any) -> list[tuple[str, str, str]]:
    items = draw(st.lists(any_id, min_size=1, max_size=5, unique=True))
    annotators = draw(st.lists(any_id, min_size=1, max_size=4, unique=True))
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(items), st.sampled_from(annotators)),
            min_size=1,
            max_size=12,
            unique=True,
        )
    )
    rows = [(i, a, draw(labels)) for i, a in pairs]
    rows.append((rows[0][0], rows[0][1], draw(st.sampled_from(["0", "1", "2"]))))
    return rows[1:]  # the last row replaces the first pair with a present label


def _expected(rows: list[tuple[str, str, str]]) -> tuple[list[str], list[str], dict]:
    present = [(i, a, lab) for i, a, lab in rows if lab not in ("", "-1")]
    items = list(dict.fromkeys(i for i, _, _ in present))
    annotators = list(dict.fromkeys(a for _, a, _ in present))
    values = {(i, a): int(float(lab)) for i, a, lab in present}
    return items, annotators, values


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=long_tables(), fmt=st.sampled_from(["csv", "tsv", "parquet"]))
def test_long_readers_keep_ids_and_drop_missing_labels(
    tmp_path: Path, rows: list[tuple[str, str, str]], fmt: str
) -> None:
    items, annotators, values = _expected(rows)
    df = pd.DataFrame(rows, columns=["item", "annotator", "label"])
    path = tmp_path / f"labels.{fmt}"
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, sep="\t" if fmt == "tsv" else ",")
    if not values:
        with pytest.raises(ValueError, match=r"has no labels: every 'label' cell is -1 or empty"):
            read_labels(path)
        return
    cl = read_labels(path)
    assert cl.item_ids.tolist() == items
    assert cl.annotator_ids.tolist() == annotators
    got = {
        (cl.item_ids[i], cl.annotator_ids[a]): int(cl.classes[k])
        for i, a, k in zip(cl.items, cl.annotators, cl.labels, strict=True)
    }
    assert got == values


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=st.lists(any_id, min_size=1, max_size=4, unique=True),
    annotators=st.lists(
        any_id.filter(lambda s: s.strip() == s and s != "item"), min_size=1, max_size=3, unique=True
    ),
    data=st.data(),
)
def test_wide_reader_keeps_ids(
    tmp_path: Path, items: list[str], annotators: list[str], data: Any
) -> None:
    cells = [[data.draw(labels) for _ in annotators] for _ in items]
    for row in cells:  # every item keeps one label
        row[0] = data.draw(st.sampled_from(["0", "1"]))
    df = pd.DataFrame(cells, columns=annotators)
    df.insert(0, "item", items)
    path = tmp_path / "wide.csv"
    df.to_csv(path, index=False)
    cl = read_wide(path)
    assert cl.item_ids.tolist() == items
    used = [a for j, a in enumerate(annotators) if any(r[j] not in ("", "-1") for r in cells)]
    assert cl.annotator_ids.tolist() == used


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(any_id, any_id), min_size=1, max_size=8),
    fmt=st.sampled_from(["csv", "tsv"]),
)
def test_box_reader_keeps_ids(tmp_path: Path, rows: list[tuple[str, str]], fmt: str) -> None:
    df = pd.DataFrame(rows, columns=["image", "reader"])
    df["class"] = "nodule"
    df[["xmin", "ymin", "xmax", "ymax"]] = [1.0, 2.0, 5.0, 6.0]
    path = tmp_path / f"boxes.{fmt}"
    df.to_csv(path, index=False, sep="\t" if fmt == "tsv" else ",")
    boxes = read_boxes(path)
    assert boxes["image"].tolist() == [i for i, _ in rows]
    assert boxes["reader"].tolist() == [r for _, r in rows]


# ---------------------------------------------------------------------- aggregate corpus
def _run(tmp_path: Path, text: str, *extra: str) -> tuple[Any, Path]:
    labels = tmp_path / "labels.csv"
    labels.write_text(text, encoding="utf-8")
    out = tmp_path / "consensus.csv"
    args = ["aggregate", str(labels), "-o", str(out), "-a", str(tmp_path / "annotators.csv")]
    return CliRunner().invoke(app, [*args, *extra]), out


def _one_line_error(result: Any, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "np." not in lines[0]  # plain numbers, never np.int64(0)
    assert re.search(pattern, lines[0]), lines[0]


def _text_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_aggregate_keeps_ids_as_written(tmp_path: Path) -> None:
    text = (
        "item,annotator,label\n"
        "007,01,1\n007,1,1\n7,01,0\n7,1,0\n1,01,1\n01,01,0\n1.0,1,1\n"
    )  # fmt: skip
    result, out = _run(tmp_path, text, "-m", "majority-vote")
    assert result.exit_code == 0, result.output
    consensus = _text_table(out)
    assert consensus["item"].tolist() == ["007", "7", "1", "01", "1.0"]
    assert consensus["label"].tolist() == ["1", "0", "1", "0", "1"]
    assert _text_table(tmp_path / "annotators.csv")["annotator"].tolist() == ["01", "1"]


@pytest.mark.parametrize("fmt", ["long", "wide"])
def test_aggregate_minus_one_is_missing_not_a_class(tmp_path: Path, fmt: str) -> None:
    if fmt == "long":
        text = "item,annotator,label\na,r1,1\na,r2,-1\nb,r1,0\nb,r2,0\nc,r1,-1\nc,r2,1\n"
    else:
        text = "item,r1,r2\na,1,-1\nb,0,0\nc,-1,1\n"
    result, out = _run(tmp_path, text, "-m", "majority-vote", "--format", fmt)
    assert result.exit_code == 0, result.output
    consensus = _text_table(out)
    assert [c for c in consensus.columns if c.startswith("p_")] == ["p_0", "p_1"]
    assert consensus["label"].tolist() == ["1", "0", "1"]
    record = json.loads((tmp_path / "consensus.csv.json").read_text())
    assert record["data"]["n_labels"] == 4


@pytest.mark.parametrize(
    ("odd", "pattern"),
    [
        ("cat", r"labels \['cat'\] that are text among numbers \(line 5\)"),
        ("0.5", r"labels \['0.5'\] that are not whole numbers"),
        ("inf", r"non-finite labels \['inf'\] \(line 5\)"),
    ],
)
def test_aggregate_refuses_a_stray_label(tmp_path: Path, odd: str, pattern: str) -> None:
    text = f"item,annotator,label\na,r1,0\na,r2,1\nb,r1,1\nb,r2,{odd}\n"
    result, out = _run(tmp_path, text)
    _one_line_error(result, r"Column 'label' of '.*labels\.csv' has " + pattern)
    assert not out.exists()


def test_aggregate_refuses_a_column_with_two_roles(tmp_path: Path) -> None:
    result, out = _run(tmp_path, "item,annotator,label\na,r1,0\nb,r1,1\n", "--label-col", "item")
    _one_line_error(result, r"Column 'item' is used as both the item and the label column")
    assert not out.exists()


def test_aggregate_names_a_folder_given_as_labels(tmp_path: Path) -> None:
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "labels.csv").write_text("item,annotator,label\na,r1,0\n")
    args = ["aggregate", str(folder), "-o", str(tmp_path / "c.csv")]
    result = CliRunner().invoke(app, args)
    _one_line_error(result, r"'.*labels' is a folder with no Parquet files; pass a table file")


def test_aggregate_quiz_ids_as_written(tmp_path: Path) -> None:
    quiz = tmp_path / "quiz.csv"
    quiz.write_text("annotator,quiz_accuracy\n01,0.9\n1,0.6\n")
    text = "item,annotator,label\na,01,1\na,1,0\nb,01,0\nb,1,0\n"
    result, _ = _run(tmp_path, text, "-m", "majority-vote", "--quiz", str(quiz))
    assert result.exit_code == 0, result.output
    table = _text_table(tmp_path / "annotators.csv")
    assert table["annotator"].tolist() == ["01", "1"]
    quiz_col = next(c for c in table.columns if "quiz" in c)
    assert np.asarray(table[quiz_col], dtype=float).tolist() == [0.9, 0.6]


def test_aggregate_declared_classes(tmp_path: Path) -> None:
    text = "item,annotator,label\na,r1,0\na,r2,1\nb,r1,1\nb,r2,1.0\n"
    result, out = _run(tmp_path, text, "-m", "majority-vote", "--classes", "0,1,2")
    assert result.exit_code == 0, result.output
    consensus = _text_table(out)
    assert [c for c in consensus.columns if c.startswith("p_")] == ["p_0", "p_1", "p_2"]
    assert consensus["p_2"].astype(float).tolist() == [0.0, 0.0]
    result, _ = _run(tmp_path, text, "--classes", "0,2")
    _one_line_error(result, r"labels \['1', '1.0'\] outside the classes \[0, 2\] \(line 3 and 2")
