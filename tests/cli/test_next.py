"""``crowdmed next``: in-process (typer's CliRunner) and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdmed.pipelines.next import next_items

LABELS = """item,annotator,label
a,r1,cat
a,r2,cat
b,r1,dog
b,r2,cat
c,r3,dog
d,r1,dog
d,r2,dog
d,r3,dog
"""
PROBS = """item,p_cat,p_dog
a,0.8,0.2
b,0.5,0.5
c,0.3,0.7
d,0.1,0.9
e,0.6,0.4
"""

# the same with a third class that no label uses
PROBS_BIRD = "item,p_cat,p_dog,p_bird\n" + "".join(
    f"{line},0\n" for line in PROBS.strip().splitlines()[1:]
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"labels": tmp_path / "labels.csv", "probs": tmp_path / "probs.csv"}
    paths["labels"].write_text(LABELS, encoding="utf-8")
    paths["probs"].write_text(PROBS, encoding="utf-8")
    return paths


def test_next_writes_the_ranked_items_and_a_run_record(cli, files, tmp_path):
    out = tmp_path / "next.csv"
    result = cli("next", files["labels"], "--probs", files["probs"], "--budget", 3, "-o", out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "rank", "item", "score", "n_labels", "consensus", "confidence",
    ]  # fmt: skip
    assert table["rank"].tolist() == [1, 2, 3]
    assert "d" not in set(table["item"])  # all three annotators labelled d
    assert table["item"].iloc[0] == "b"  # the 1-1 tie the model cannot settle
    assert (np.diff(table["score"]) <= 0).all()
    assert "e" in set(table["item"])  # an unlabelled item is a candidate
    record = json.loads((tmp_path / "next.csv.json").read_text())
    assert record["command"] == "next"
    assert record["data"]["n_eligible"] == 4
    assert record["data"]["n_labelled_items"] == 4


def test_assign_names_an_annotator_who_has_not_labelled_the_item(cli, files, tmp_path):
    out = tmp_path / "next.csv"
    result = cli("next", files["labels"], "--probs", files["probs"], "-n", 4, "-o", out, "--assign")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out).set_index("item")
    labels = pd.read_csv(files["labels"])
    done = set(zip(labels["item"], labels["annotator"], strict=True))
    for item, row in table.iterrows():
        assert (item, row["annotator"]) not in done
    assert table.loc["b", "annotator"] == "r3"


def test_activelab_method_matches_the_library(cli, files, tmp_path):
    out = tmp_path / "next.csv"
    result = cli(
        "next", files["labels"], "--probs", files["probs"], "-n", 2, "-o", out,
        "--method", "activelab",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = next_items(files["labels"], files["probs"], budget=2, method="activelab")
    table = pd.read_csv(out)
    assert table["item"].tolist() == plan.table["item"].tolist()
    np.testing.assert_allclose(table["score"], plan.table["score"])


@pytest.mark.parametrize(
    ("probs", "budget", "pattern"),
    [
        (PROBS, 0, r"`--budget` must be an integer (>= 1|from 1 to \d+); got 0"),
        (PROBS.replace("d,0.1,0.9\n", ""), 2, r"must have a row for every labelled item.*'d'"),
        (PROBS.replace("0.8,0.2", "0.8,0.4"), 2, r"rows must sum to 1; got 1\.2 for item .a."),
        (
            PROBS.replace(",p_dog", ",p_bird"),
            2,
            r"p_<class> column for every class.*'dog'\] \(columns \['p_cat', 'p_bird'\]\)",
        ),
        (
            PROBS_BIRD,
            2,
            r"classes that LABELS neither uses nor declares: \['p_bird'\]; declare every "
            r"class with --classes cat,dog,bird",
        ),
        (PROBS.replace("item,", "case,"), 2, r"`--probs` must have an 'item' column"),
        (PROBS + "a,0.5,0.5\n", 2, r"repeated items \['a'\]"),
    ],
)  # fmt: skip
def test_bad_inputs_are_one_line_errors(cli, user_error, files, tmp_path, probs, budget, pattern):
    files["probs"].write_text(probs, encoding="utf-8")
    out = tmp_path / "next.csv"
    result = cli("next", files["labels"], "--probs", files["probs"], "-n", budget, "-o", out)
    user_error(result, pattern)
    assert not out.exists()


def test_label_file_options_match_aggregate(cli, user_error, files, tmp_path):
    out = tmp_path / "next.csv"
    # a class no one has used yet is declared with --classes; the model has a column for it
    files["probs"].write_text(PROBS_BIRD, encoding="utf-8")
    result = cli(
        "next", files["labels"], "--probs", files["probs"], "-n", 5, "-o", out,
        "--classes", "cat,dog,bird",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(out)["consensus"]) <= {"cat", "dog"}
    # other column names, and a repeated (item, annotator) pair
    renamed = LABELS.replace("item,annotator,label", "case,reader,grade") + "a,r1,dog\n"
    files["labels"].write_text(renamed, encoding="utf-8")
    base = ["next", files["labels"], "--probs", files["probs"], "-n", 5, "-o", out]
    base += ["--classes", "cat,dog,bird"]
    cols = ["--item-col", "case", "--annotator-col", "reader", "--label-col", "grade"]
    user_error(cli(*base, *cols), r"--on-duplicate")
    user_error(
        cli(*base, *cols, "--on-duplicate", "frist"),
        r"`--on-duplicate` must be one of .*Did you mean 'first'",
    )
    result = cli(*base, *cols, "--on-duplicate", "first")
    assert result.exit_code == 0, result.output
    first = pd.read_csv(out)
    result = cli(*base, *cols, "--on-duplicate", "last")
    assert result.exit_code == 0, result.output
    last = pd.read_csv(out)
    # a's first labels are cat, cat; with the last of r1's it is split cat/dog
    assert first.set_index("item").loc["a", "score"] != last.set_index("item").loc["a", "score"]


@pytest.mark.parametrize("name", ["next.xlsx", "next.json", "next"])
def test_out_must_be_named_as_a_table(cli, user_error, files, tmp_path, name):
    out = tmp_path / name
    result = cli("next", files["labels"], "--probs", files["probs"], "-n", 1, "-o", out)
    user_error(result, r"`--out` .* must be named as a \.csv, \.tsv or \.parquet table")
    assert not out.exists()


def test_bad_method_suggests_the_closest(cli, user_error, files, tmp_path):
    result = cli(
        "next", files["labels"], "--probs", files["probs"], "-n", 1, "-o", tmp_path / "n.csv",
        "--method", "activelb",
    )  # fmt: skip
    user_error(result, r"Did you mean 'activelab'")


def test_subprocess(files, tmp_path):
    out = tmp_path / "next.csv"
    env = {**os.environ, "COLUMNS": "120"}
    cmd = [sys.executable, "-m", "crowdmed", "next", str(files["labels"]), "--probs",
           str(files["probs"]), "--budget", "2", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert len(pd.read_csv(out)) == 2
    proc = subprocess.run(
        [*cmd[:-3], "0", "--out", str(out)], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("Error: `--budget`")
