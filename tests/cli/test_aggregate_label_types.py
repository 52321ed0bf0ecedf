"""``crowdmed aggregate`` on ordinal and continuous labels, ``--method auto``, the reader
operating points of binary labels, and the method list of ``--help``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crowdmed.aggregation import CONTINUOUS_METHODS, ORDINAL_METHODS, AutoAggregator, Method
from crowdmed.cli import app
from crowdmed.data.io import read_labels
from crowdmed.quality import reader_operating_points

GRADES = ["low", "mid", "high", "severe"]


def _ordinal_csv(path: Path) -> Path:
    """150 nodules x 4 readers: one reads a grade low, one a grade high, two are fair."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(150):
        t = int(rng.integers(0, 4))
        for reader, off in zip(["strict", "fair1", "fair2", "lenient"], [-1, 0, 0, 1], strict=True):
            g = t + off if rng.random() < 0.85 else t + off + int(rng.choice([-1, 1]))
            rows.append((f"n{i:03d}", reader, GRADES[int(np.clip(g, 0, 3))], GRADES[t]))
    pd.DataFrame(rows, columns=["item", "annotator", "label", "gold"]).to_csv(path, index=False)
    return path


def _continuous_csv(path: Path) -> Path:
    """80 items x 4 readers: r1 reads 0.5 high, r2 doubles the scale, r3 is noisy."""
    rng = np.random.default_rng(2)
    rows = []
    for i in range(80):
        t = rng.normal()
        for reader, (scale, bias, sd) in zip(
            ["r0", "r1", "r2", "r3"],
            [(1, 0, 0.1), (1, 0.5, 0.1), (2, 0, 0.1), (1, 0, 1.0)],
            strict=True,
        ):
            rows.append((f"x{i:02d}", reader, scale * t + bias + sd * rng.normal(), t))
    pd.DataFrame(rows, columns=["item", "annotator", "label", "gold"]).to_csv(path, index=False)
    return path


BINARY_CSV = """item,annotator,label
a,r1,1
a,r2,1
a,r3,0
b,r1,1
b,r2,1
b,r3,1
c,r1,0
c,r2,0
c,r3,1
d,r1,0
d,r2,1
d,r3,0
e,r1,1
e,r2,0
f,r1,0
f,r2,0
f,r3,0
"""


def _run(runner: CliRunner, *args: str) -> object:
    result = runner.invoke(app, ["aggregate", *args])
    assert result.exit_code == 0, result.output
    return result


# ---------------------------------------------------------------------- --help
def test_help_lists_every_method(runner: CliRunner) -> None:
    """The --method help names every nominal, ordinal and continuous method and auto."""
    result = runner.invoke(app, ["aggregate", "--help"])
    assert result.exit_code == 0
    text = re.sub(r"[│\s]+", " ", result.stdout)
    segment = text[text.index("--method") : text.index("--label-type")]
    squeezed = re.sub(r"\s", "", segment)  # a name may wrap across lines
    names = [m.value for m in Method] + ["auto"]
    names += [m.value for m in ORDINAL_METHODS] + [m.value for m in CONTINUOUS_METHODS]
    missing = [n for n in names if n not in squeezed]
    assert not missing, segment
    for option in ("--label-type", "--classes"):
        assert option in result.stdout


# ---------------------------------------------------------------------- ordinal
def test_ordinal_offsets_noise_and_grade_order(runner: CliRunner, tmp_path: Path) -> None:
    labels = _ordinal_csv(tmp_path / "grades.csv")
    out, ann = tmp_path / "consensus.csv", tmp_path / "annotators.csv"
    result = _run(
        runner,
        *(str(labels), "-t", "ordinal", "--classes", "low,mid,high,severe"),
        *("-o", str(out), "-a", str(ann)),
    )
    assert "graded-response" in result.stderr
    df = pd.read_csv(out)
    # the probability columns follow the grade order given, not the alphabetical one
    assert list(df.columns) == ["item", "label", "confidence", *(f"p_{g}" for g in GRADES), "gold"]
    table = pd.read_csv(ann).set_index("annotator")
    offsets = table["offset"]
    # the strict reader sees one grade less, the lenient one grade more (grade spacing 1)
    assert offsets["strict"] == pytest.approx(-1.0, abs=0.2)
    assert offsets["lenient"] == pytest.approx(1.0, abs=0.2)
    assert abs(offsets["fair1"]) < 0.2
    assert abs(offsets["fair2"]) < 0.2
    assert (table["noise"] > 0).all()
    record = json.loads((tmp_path / "consensus.csv.json").read_text())
    assert record["label_type"] == "ordinal"
    assert record["data"]["classes"] == GRADES
    by_reader = {r["annotator"]: r for r in record["annotators"]}
    assert by_reader["strict"]["offset"] == pytest.approx(offsets["strict"])
    assert by_reader["lenient"]["noise"] == pytest.approx(table.loc["lenient", "noise"])
    acc = record["evaluation"]["accuracy_vs_gold"]
    assert acc == pytest.approx(float((df["label"] == df["gold"]).mean()))
    # the model of offsets beats the median of the readers' grades on these readers
    median_out = tmp_path / "median.csv"
    _run(
        runner,
        *(str(labels), "-t", "ordinal", "-m", "median", "--classes", "low,mid,high,severe"),
        *("-o", str(median_out)),
    )
    median = pd.read_csv(median_out)
    assert acc > float((median["label"] == median["gold"]).mean())


# ---------------------------------------------------------------------- continuous
def test_continuous_bias_precision_scale(runner: CliRunner, tmp_path: Path) -> None:
    labels = _continuous_csv(tmp_path / "values.csv")
    out, ann = tmp_path / "consensus.csv", tmp_path / "annotators.csv"
    result = _run(
        runner, str(labels), "-t", "continuous", "-m", "scale-bias", "-o", str(out), "-a", str(ann)
    )
    assert "MAE" in result.stderr
    assert "RMSE" in result.stderr
    df = pd.read_csv(out)
    assert list(df.columns) == ["item", "value", "sd", "n_labels", "gold"]
    table = pd.read_csv(ann).set_index("annotator")
    assert list(table.columns) == [
        "n_labels",
        "mean_deviation",
        "rmse_to_consensus",
        "bias",
        "precision",
        "scale",
    ]
    # scales are relative to the truth's (mean 1 over readers): r2 reads twice the others
    assert table.loc["r2", "scale"] / table.loc["r0", "scale"] == pytest.approx(2.0, rel=0.05)
    assert table.loc["r1", "scale"] / table.loc["r0", "scale"] == pytest.approx(1.0, rel=0.05)
    # biases are relative too (mean 0): r1 reads 0.5 higher than r0
    assert table.loc["r1", "bias"] - table.loc["r0", "bias"] == pytest.approx(0.5, abs=0.1)
    assert table["precision"].idxmin() == "r3"
    record = json.loads((tmp_path / "consensus.csv.json").read_text())
    err = df["value"] - df["gold"]
    assert record["evaluation"]["mae_vs_gold"] == pytest.approx(err.abs().mean())
    assert record["evaluation"]["rmse_vs_gold"] == pytest.approx(np.sqrt((err**2).mean()))
    assert record["data"]["n_labels"] == 320
    by_reader = {r["annotator"]: r for r in record["annotators"]}
    assert by_reader["r2"]["scale"] == pytest.approx(table.loc["r2", "scale"])
    assert by_reader["r3"]["precision"] == pytest.approx(table.loc["r3", "precision"])


def test_continuous_mean_is_the_item_mean(runner: CliRunner, tmp_path: Path) -> None:
    labels = _continuous_csv(tmp_path / "values.csv")
    out = tmp_path / "consensus.csv"
    _run(runner, str(labels), "-t", "continuous", "-m", "mean", "-o", str(out))
    expected = pd.read_csv(labels).groupby("item")["label"].mean()
    df = pd.read_csv(out).set_index("item")
    np.testing.assert_allclose(df["value"], expected.reindex(df.index), rtol=1e-12)


# ---------------------------------------------------------------------- binary readers
def test_binary_operating_points_in_annotators_and_json(runner: CliRunner, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(BINARY_CSV, encoding="utf-8")
    out, ann = tmp_path / "consensus.csv", tmp_path / "annotators.csv"
    _run(runner, str(labels), "-m", "dawid-skene", "-o", str(out), "-a", str(ann))
    df = pd.read_csv(out)
    table = pd.read_csv(ann).set_index("annotator")
    cols = ["n_positive", "n_negative", "sensitivity", "sensitivity_low", "sensitivity_high"]
    cols += ["specificity", "specificity_low", "specificity_high"]
    assert all(c in table.columns for c in cols)
    # soft counts from the consensus posteriors, by hand for reader r1 (items a..f)
    long = pd.read_csv(labels)
    p1 = df.set_index("item")["p_1"]
    r1 = long[long["annotator"] == "r1"]
    n_pos = p1[r1["item"]].sum()
    hits = p1[r1.loc[r1["label"] == 1, "item"]].sum()
    assert table.loc["r1", "n_positive"] == pytest.approx(n_pos)
    assert table.loc["r1", "n_negative"] == pytest.approx(len(r1) - n_pos)
    assert table.loc["r1", "sensitivity"] == pytest.approx(hits / n_pos)
    # the same figures as the library function on the consensus posteriors
    expected = reader_operating_points(
        read_labels(labels), df[["p_0", "p_1"]].to_numpy()
    ).set_index("annotator")
    expected.index = expected.index.astype(str)
    for c in cols:
        np.testing.assert_allclose(table[c], expected.loc[table.index.astype(str), c])
    record = json.loads((tmp_path / "consensus.csv.json").read_text())
    by_reader = {str(r["annotator"]): r for r in record["annotators"]}
    assert by_reader["r2"]["specificity_low"] == pytest.approx(table.loc["r2", "specificity_low"])
    assert by_reader["r3"]["n_labels"] == 5


# ---------------------------------------------------------------------- auto
def test_auto_reports_choice_and_scores(runner: CliRunner, tmp_path: Path) -> None:
    labels = _ordinal_csv(tmp_path / "grades.csv")  # read as nominal classes here
    out = tmp_path / "consensus.csv"
    result = _run(runner, str(labels), "-m", "auto", "-o", str(out))
    record = json.loads((tmp_path / "consensus.csv.json").read_text())
    fit = record["fit"]
    auto = AutoAggregator(random_state=0).fit(read_labels(labels))
    assert fit["chosen"] == auto.chosen_
    assert set(fit["scores"]) == set(auto.scores_)
    assert "sens-spec" not in fit["scores"]  # binary only; these labels have four classes
    for name, score in auto.scores_.items():
        assert fit["scores"][name] == pytest.approx(score)
    assert max(fit["scores"], key=fit["scores"].get) == fit["chosen"]
    assert record["estimator"] == "AutoAggregator"
    assert pd.read_csv(out)["label"].tolist() == list(auto.classes_[auto.labels_])
    assert "chosen" in result.stderr
    assert fit["chosen"] in result.stderr


# ---------------------------------------------------------------------- gold majority vote
def test_gold_majority_vote_summary_says_weights(runner: CliRunner, tmp_path: Path) -> None:
    labels = _ordinal_csv(tmp_path / "grades.csv")
    out = tmp_path / "consensus.csv"
    result = _run(runner, str(labels), "-m", "gold-majority-vote", "--use-gold", "-o", str(out))
    summary = re.sub(r"[│\s]+", " ", result.stderr)
    assert "gold items gave the annotators' weights in the fit" in summary
    assert "clamped" not in summary


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (
            ["-t", "ordinal", "-m", "dawid-skene"],
            r"`--method` must be one of \['graded-response', 'median', "
            r"'ordinal-majority-vote'\]; got 'dawid-skene', a method for nominal labels\. Pass "
            r"--label-type nominal",
        ),
        (["-m", "raykar"], r"got 'raykar', a method for continuous labels\. Pass --label-type"),
        (["-t", "continuous", "--classes", "1,2"], r"`--classes` does not apply to --label-type"),
        (["-t", "interval"], r"`--label-type` must be one of"),
        (["-t", "ordinal", "--classes", "low,mid"], r"low|mid|high|severe"),
        (["-t", "continuous"], r"must hold finite numbers for --label-type continuous"),
    ],
)
def test_label_type_errors(
    runner: CliRunner, tmp_path: Path, extra: list[str], pattern: str
) -> None:
    labels = _ordinal_csv(tmp_path / "grades.csv")
    result = runner.invoke(app, ["aggregate", str(labels), "-o", str(tmp_path / "c.csv"), *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "c.csv").exists()


# ---------------------------------------------------------------------- writing
@pytest.mark.parametrize("name", ["c.csv", "c.csv.gz", "c.tsv", "c.parquet"])
def test_consensus_formats_read_back_exactly(runner: CliRunner, tmp_path: Path, name: str) -> None:
    """CSV (pyarrow's writer), gzipped CSV, TSV and Parquet hold the same values, bit for bit."""
    labels = _ordinal_csv(tmp_path / "grades.csv")
    _run(runner, str(labels), "-o", str(tmp_path / "ref.parquet"))
    _run(runner, str(labels), "-o", str(tmp_path / name))
    ref = pd.read_parquet(tmp_path / "ref.parquet")
    if name.endswith(".parquet"):
        got = pd.read_parquet(tmp_path / name)
    else:
        sep = "\t" if ".tsv" in name else ","
        got = pd.read_csv(tmp_path / name, sep=sep, float_precision="round_trip")
    pd.testing.assert_frame_equal(got, ref, check_exact=True)
