"""Tests of the command-line interface, run in-process with typer's CliRunner (and once as a
real subprocess) on small files written to ``tmp_path``."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import crowdmed.cli.aggregate
from crowdmed import __version__
from crowdmed.cli import app

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("CROWDMED_DATA", REPO.parent / "shared" / "data"))
MS_CSV = DATA / "active_crowd_toolkit" / "Data" / "MS.csv"

# 6 items x 4 annotators, binary string labels; items a and b have gold labels.
LONG_CSV = """item,annotator,label,gold
a,r1,benign,benign
a,r2,benign,benign
a,r3,malignant,benign
b,r1,malignant,malignant
b,r2,malignant,malignant
b,r4,malignant,malignant
c,r2,benign,
c,r3,benign,
c,r4,malignant,
d,r1,malignant,
d,r3,malignant,
e,r1,benign,
e,r2,benign,
e,r4,benign,
f,r3,malignant,
f,r4,benign,
"""
N_ITEMS, N_ANNOTATORS = 6, 4

# crowd-kit layout: task, worker, label; three classes.
CROWDKIT_CSV = """task,worker,label
t1,w1,cat
t1,w2,cat
t1,w3,dog
t2,w1,dog
t2,w2,dog
t2,w3,dog
t3,w1,bird
t3,w2,cat
t3,w3,bird
t4,w2,bird
t4,w3,bird
"""

# Wide layout: one row per item, one column per annotator, empty cells missing.
WIDE_CSV = """case,r1,r2,r3,gold
x1,1,1,0,1
x2,0,0,,0
x3,1,,1,
x4,0,1,0,
x5,1,1,1,
"""

METHOD_COLUMNS = {
    "majority-vote": [],
    "wawa": ["skill", "weight"],
    "dawid-skene": [],
    "one-coin": ["skill"],
    "glad": ["skill", "alpha"],
    "sens-spec": ["model_sensitivity", "model_specificity"],
}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def check_consensus(path: Path, n_items: int) -> pd.DataFrame:
    df = pd.read_csv(path)
    assert len(df) == n_items
    assert list(df.columns[:3]) == ["item", "label", "confidence"]
    p = df.filter(regex=r"^p_").to_numpy()
    assert p.shape[1] >= 2
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(df["confidence"], p.max(axis=1))
    assert ((p >= 0) & (p <= 1)).all()
    return df


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ---------------------------------------------------------------------- global options
def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"crowdmed {__version__}\n"


def test_help_lists_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "aggregate" in result.stdout
    assert "demo" in result.stdout
    result = runner.invoke(app, ["aggregate", "--help"])
    assert result.exit_code == 0
    for option in ("--method", "--out", "--annotators", "--use-gold", "--on-duplicate"):
        assert option in result.stdout


# ---------------------------------------------------------------------- aggregate: success
@pytest.mark.parametrize("method", list(METHOD_COLUMNS))
def test_aggregate_long_every_method(runner: CliRunner, tmp_path: Path, method: str) -> None:
    labels = write(tmp_path / "labels.csv", LONG_CSV)
    out, ann = tmp_path / "consensus.csv", tmp_path / "annotators.csv"
    result = runner.invoke(
        app, ["aggregate", str(labels), "--method", method, "--out", str(out), "-a", str(ann)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # everything human-readable goes to stderr
    assert method in result.stderr
    df = check_consensus(out, N_ITEMS)
    assert set(df["label"]) <= {"benign", "malignant"}
    assert list(df.columns) == [
        "item",
        "label",
        "confidence",
        "p_benign",
        "p_malignant",
        "gold",
    ]
    assert df["gold"].tolist()[:2] == ["benign", "malignant"]
    assert df["gold"].iloc[2:].isna().all()

    table = pd.read_csv(ann)
    assert len(table) == N_ANNOTATORS
    assert table["annotator"].tolist() == ["r1", "r2", "r3", "r4"]
    for column in ["n_labels", "consensus_agreement", "gold_accuracy", *METHOD_COLUMNS[method]]:
        assert column in table.columns

    record = json.loads((tmp_path / "consensus.csv.json").read_text())
    assert record["crowdmed_version"] == __version__
    assert record["method"] == method
    assert record["seed"] == 0
    assert record["params"]["random_state"] == 0
    assert record["input"]["sha256"] == hashlib.sha256(labels.read_bytes()).hexdigest()
    assert record["data"] == {
        "n_items": N_ITEMS,
        "n_annotators": N_ANNOTATORS,
        "n_classes": 2,
        "n_labels": 16,
        "classes": ["benign", "malignant"],
        "n_gold": 2,
    }
    assert record["evaluation"]["n_gold"] == 2
    assert 0.0 <= record["evaluation"]["accuracy_vs_gold"] <= 1.0
    assert record["outputs"]["consensus"] == str(out.resolve())
    assert record["fit"]["n_iter"] >= 0
    assert isinstance(record["fit"]["converged"], bool)
    assert record["elapsed_seconds"] > 0
    assert files_in(tmp_path) == {
        "labels.csv",
        "consensus.csv",
        "annotators.csv",
        "consensus.csv.json",
    }


def test_aggregate_records_params_and_seed(runner: CliRunner, tmp_path: Path) -> None:
    labels = write(tmp_path / "labels.csv", LONG_CSV)
    sidecar = tmp_path / "run" / "record.json"
    result = runner.invoke(
        app,
        [
            "aggregate",
            str(labels),
            "-o",
            str(tmp_path / "run" / "consensus.tsv"),
            "--seed",
            "7",
            "--max-iter",
            "5",
            "--tol",
            "1e-3",
            "--json",
            str(sidecar),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(sidecar.read_text())
    assert record["seed"] == 7
    assert record["params"] == {
        "max_iter": 5,
        "tol": 1e-3,
        "init": "majority_vote",
        "smoothing": 0.01,
        "random_state": 7,
    }
    assert record["arguments"]["max_iter"] == 5
    df = pd.read_csv(tmp_path / "run" / "consensus.tsv", sep="\t")
    assert len(df) == N_ITEMS


def test_aggregate_crowdkit_layout(runner: CliRunner, tmp_path: Path) -> None:
    labels = write(tmp_path / "crowdkit.csv", CROWDKIT_CSV)
    out = tmp_path / "consensus.csv"
    result = runner.invoke(app, ["aggregate", str(labels), "-m", "majority-vote", "-o", str(out)])
    assert result.exit_code == 0, result.output
    df = check_consensus(out, 4)
    assert [c for c in df.columns if c.startswith("p_")] == ["p_bird", "p_cat", "p_dog"]
    assert df.set_index("item")["label"].to_dict() == {
        "t1": "cat",
        "t2": "dog",
        "t3": "bird",
        "t4": "bird",
    }
    assert "gold" not in df.columns
    assert "accuracy vs gold" not in result.stderr


def test_aggregate_wide(runner: CliRunner, tmp_path: Path) -> None:
    labels = write(tmp_path / "wide.csv", WIDE_CSV)
    out, ann = tmp_path / "consensus.csv", tmp_path / "annotators.csv"
    result = runner.invoke(
        app,
        [
            "aggregate",
            str(labels),
            "--format",
            "wide",
            "-m",
            "one-coin",
            "-o",
            str(out),
            "-a",
            str(ann),
        ],
    )
    assert result.exit_code == 0, result.output
    df = check_consensus(out, 5)
    assert df["item"].tolist() == ["x1", "x2", "x3", "x4", "x5"]
    assert [c for c in df.columns if c.startswith("p_")] == ["p_0", "p_1"]
    assert df["gold"].tolist()[:2] == [1, 0]
    assert pd.read_csv(ann)["annotator"].tolist() == ["r1", "r2", "r3"]
    assert "accuracy vs gold" in result.stderr


def test_aggregate_quiz_and_use_gold(runner: CliRunner, tmp_path: Path) -> None:
    labels = write(tmp_path / "labels.csv", LONG_CSV)
    quiz = write(tmp_path / "quiz.csv", "annotator,quiz_accuracy\nr1,0.9\nr2,0.8\nr4,0.6\n")
    out, ann = tmp_path / "consensus.csv", tmp_path / "annotators.csv"
    result = runner.invoke(
        app,
        [
            *("aggregate", str(labels), "-m", "sens-spec", "--quiz", str(quiz), "--use-gold"),
            *("-o", str(out), "-a", str(ann)),
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(ann)
    assert table["quiz_accuracy"].tolist()[:2] == [0.9, 0.8]
    assert np.isnan(table["quiz_accuracy"].iloc[2])
    df = check_consensus(out, N_ITEMS)
    # Gold items are clamped to their gold label with --use-gold.
    assert df["label"].tolist()[:2] == ["benign", "malignant"]
    np.testing.assert_allclose(df["confidence"].iloc[:2], 1.0)
    record = json.loads((tmp_path / "consensus.csv.json").read_text())
    assert record["fit"]["used_gold"] is True
    assert record["evaluation"]["accuracy_vs_gold"] is None  # not an evaluation when clamped
    assert record["input"]["quiz"]["sha256"] == hashlib.sha256(quiz.read_bytes()).hexdigest()


def test_aggregate_on_duplicate(runner: CliRunner, tmp_path: Path) -> None:
    labels = write(tmp_path / "labels.csv", LONG_CSV + "a,r1,malignant,benign\n")
    out = tmp_path / "consensus.csv"
    result = runner.invoke(
        app, ["aggregate", str(labels), "-o", str(out), "--on-duplicate", "last"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "consensus.csv.json").read_text())
    assert record["data"]["n_labels"] == 16


def test_aggregate_reports_convergence_warning(runner: CliRunner, tmp_path: Path) -> None:
    labels = write(tmp_path / "labels.csv", LONG_CSV)
    out = tmp_path / "consensus.csv"
    result = runner.invoke(app, ["aggregate", str(labels), "-o", str(out), "--max-iter", "1"])
    assert result.exit_code == 0, result.output
    assert "Warning: DawidSkene did not converge" in result.stderr
    record = json.loads((tmp_path / "consensus.csv.json").read_text())
    assert record["fit"]["converged"] is False
    assert re.search(r"did not converge", record["fit"]["warnings"][0])


@pytest.mark.skipif(not MS_CSV.exists(), reason=f"ActiveCrowdToolkit data not found at {MS_CSV}")
def test_aggregate_active_crowd_toolkit(runner: CliRunner, tmp_path: Path) -> None:
    out, ann = tmp_path / "consensus.csv", tmp_path / "annotators.csv"
    result = runner.invoke(app, ["aggregate", str(MS_CSV), "-o", str(out), "-a", str(ann)])
    assert result.exit_code == 0, result.output
    df = check_consensus(out, 700)
    assert df["gold"].notna().all()
    assert len(pd.read_csv(ann)) == 44
    record = json.loads((tmp_path / "consensus.csv.json").read_text())
    assert record["data"]["n_labels"] == 2945
    assert record["data"]["classes"] == list(range(1, 11))
    assert record["evaluation"]["accuracy_vs_gold"] > 0.7
    assert record["fit"]["converged"] is True


# ---------------------------------------------------------------------- aggregate: errors
ERROR_CASES = [
    pytest.param(
        LONG_CSV + "a,r1,benign,benign\n",
        [],
        r"Each \(item, annotator\) pair must occur once; .*--on-duplicate",
        id="duplicate-pairs",
    ),
    pytest.param("", [], r"File '.*labels\.csv' is empty", id="empty-file"),
    pytest.param(
        LONG_CSV + "g,r1,3,\n",
        [],
        r"Column 'label' of '.*labels\.csv' has labels \['3'\] that are numbers among text "
        r"\(line 18\)",
        id="stray-label",
    ),
    pytest.param(
        LONG_CSV,
        ["--method", "dawid-skeen"],
        r"`--method` must be one of \[.*\]; got 'dawid-skeen'\. Did you mean 'dawid-skene'\?",
        id="unknown-method",
    ),
    pytest.param(
        LONG_CSV,
        ["--label-col", "grade"],
        r"Column 'grade' \(the label column\) is not in the table",
        id="missing-column",
    ),
    pytest.param(
        "item,annotator,label\na,r1,x\na,r2,x\nb,r1,x\n",
        [],
        r"at least 2 classes",
        id="single-class",
    ),
    pytest.param(WIDE_CSV, [], r"No annotator column found.*pass --format wide", id="wide-as-long"),
    pytest.param(
        WIDE_CSV,
        ["--format", "wide", "--annotator-col", "r1"],
        r"`--annotator-col` applies to long files only",
        id="wide-annotator-col",
    ),
    pytest.param(
        LONG_CSV,
        ["--method", "majority-vote", "--max-iter", "3"],
        r"`--max-iter` does not apply to --method majority-vote",
        id="max-iter-majority-vote",
    ),
    pytest.param(LONG_CSV, ["--tol", "-1"], r"`--tol` must be a number from 0", id="negative-tol"),
    pytest.param(
        CROWDKIT_CSV, ["--method", "sens-spec"], r"needs binary labels", id="sens-spec-3-classes"
    ),
    pytest.param(
        CROWDKIT_CSV, ["--use-gold"], r"`--use-gold` needs gold labels", id="use-gold-no-gold"
    ),
    pytest.param(
        LONG_CSV,
        ["--on-duplicate", "dorp"],
        r"`--on-duplicate` must be one of .*Did you mean 'drop'\?",
        id="bad-on-duplicate",
    ),
    pytest.param(LONG_CSV, ["--format", "tall"], r"`--format` must be one of", id="bad-format"),
    pytest.param(
        LONG_CSV,
        ["--annotators", "consensus.csv"],
        r"`--annotators` and `--out` must be different files",
        id="same-outputs",
    ),
    pytest.param(
        LONG_CSV, ["--quiz", "quiz.csv"], r"File 'quiz\.csv' does not exist", id="missing-quiz"
    ),
    pytest.param(
        LONG_CSV,
        ["--annotators", "annotators.xlsx"],
        r"`--annotators` 'annotators\.xlsx' must be named as a \.csv, \.tsv or \.parquet "
        r"table \(got '\.xlsx'\); name it e\.g\. 'annotators\.csv'",
        id="annotators-not-a-table-name",
    ),
    pytest.param(
        LONG_CSV,
        ["-o", "consensus"],
        r"`--out` 'consensus' must be named as a .*got 'no suffix'",
        id="out-without-suffix",
    ),
]


@pytest.mark.parametrize(("content", "extra", "pattern"), ERROR_CASES)
def test_aggregate_user_errors(
    runner: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: str,
    extra: list[str],
    pattern: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "labels.csv", content)
    result = runner.invoke(
        app, ["aggregate", "labels.csv", "-o", "consensus.csv", "-a", "annotators.csv", *extra]
    )
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert files_in(tmp_path) == {"labels.csv"}  # no output, no temporary file


def test_aggregate_missing_file(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["aggregate", "x.csv", "--out", "consensus.csv"])
    assert result.exit_code == 2
    assert result.stderr == "Error: File 'x.csv' does not exist; check the path.\n"
    assert files_in(tmp_path) == set()


def test_aggregate_refuses_to_overwrite_input(runner: CliRunner, tmp_path: Path) -> None:
    labels = write(tmp_path / "labels.csv", LONG_CSV)
    result = runner.invoke(app, ["aggregate", str(labels), "--out", str(labels)])
    assert result.exit_code == 2
    assert re.fullmatch(r"Error: `--out` must not overwrite the input file .*\n", result.stderr)
    assert labels.read_text() == LONG_CSV


def test_failed_write_leaves_no_partial_output(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = write(tmp_path / "labels.csv", LONG_CSV)
    out = write(tmp_path / "consensus.csv", "old result\n")
    real_write_table = crowdmed.cli.aggregate.write_table

    def failing_write_table(df: pd.DataFrame, path: Path) -> None:
        if "annotators" in Path(path).name:
            raise OSError("No space left on device")
        real_write_table(df, path)

    monkeypatch.setattr(crowdmed.cli.aggregate, "write_table", failing_write_table)
    result = runner.invoke(
        app,
        ["aggregate", str(labels), "-o", str(out), "-a", str(tmp_path / "new" / "annotators.csv")],
    )
    assert result.exit_code == 2
    assert result.stderr == "Error: No space left on device\n"
    # The consensus written before the failure was not moved in place, the old file is intact,
    # and neither temporary files nor the new folder remain.
    assert out.read_text() == "old result\n"
    assert files_in(tmp_path) == {"labels.csv", "consensus.csv"}


def test_debug_shows_the_exception(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["--debug", "aggregate", str(tmp_path / "x.csv"), "-o", str(tmp_path / "c.csv")]
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)
    assert "does not exist" in str(result.exception)


# ---------------------------------------------------------------------- real subprocess
def test_subprocess_python_m_crowdmed(tmp_path: Path) -> None:
    labels = write(tmp_path / "labels.csv", LONG_CSV)
    out = tmp_path / "consensus.csv"
    env = {**os.environ, "COLUMNS": "120"}
    cmd = [sys.executable, "-m", "crowdmed", "aggregate", str(labels), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "dawid-skene" in proc.stderr
    assert "accuracy vs gold" in proc.stderr
    check_consensus(out, N_ITEMS)
    assert json.loads((tmp_path / "consensus.csv.json").read_text())["seed"] == 0

    proc = subprocess.run(
        [*cmd[:4], str(tmp_path / "missing.csv"), "-o", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert re.fullmatch(
        r"Error: File '.*missing\.csv' does not exist; check the path\.\n", proc.stderr
    )


# ---------------------------------------------------------------------- demo
@pytest.mark.skipif(
    importlib.util.find_spec("crowdmed.pipelines.demo") is None,
    reason="crowdmed.pipelines.demo is not available",
)
def test_demo(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(
        app,
        [
            "demo",
            "--out",
            str(out),
            "-m",
            "majority-vote,dawid-skene",
            "-d",
            "MS",
            "--seed",
            "1",
            "--parts",
            "crowd,masks",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.json").read_text())["params"]["parts"] == ["crowd", "masks"]
    assert (out / "report.html").exists()
    assert json.loads((out / "results.json").read_text())["summary"]
    assert "MS" in result.stdout
    assert "report.html" in result.stdout


def test_demo_unknown_dataset(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--datasets", "MSS"])
    assert result.exit_code == 2
    assert re.fullmatch(
        r"Error: `--datasets` must be one of .*Did you mean 'MS'\?\n", result.stderr
    )
    assert not (tmp_path / "d").exists()


def test_demo_unknown_part(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--parts", "crowd,mask"])
    assert result.exit_code == 2
    assert re.fullmatch(r"Error: Unknown demo part 'mask'.*Did you mean 'masks'\?\n", result.stderr)
    assert not (tmp_path / "d").exists()


def test_demo_unknown_method(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--methods", "stapel,glad"])
    assert result.exit_code == 2
    assert re.fullmatch(
        r"Error: `--methods` must be one of \[.*\]; got 'stapel'\.\n", result.stderr
    )
    assert not (tmp_path / "d").exists()
