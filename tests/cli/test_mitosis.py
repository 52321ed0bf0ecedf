"""`crowdmed mitosis synthesize | train | detect | evaluate` on a tiny synthetic folder."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from crowdmed.cli import app

torch = pytest.importorskip("torch")


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(app, ["mitosis", *[str(a) for a in args]])


def assert_user_error(result: Any, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mitosis")
    for split, n, seed in (("train", 4, 1), ("test", 2, 2)):
        r = invoke("synthesize", "--out", root / split, "-n", n, "--size", 96, "--seed", seed)
        assert r.exit_code == 0, r.output
    return root


@pytest.fixture(scope="module")
def model(data: Path) -> Path:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = invoke(
            "train", "--images", data / "train", "--points", data / "train" / "points.csv",
            "--val-images", data / "test", "--val-points", data / "test" / "points.csv",
            "--out", data / "model", "--scales", "0.5,1", "--epochs", 1, "--radius", 15,
        )  # fmt: skip
    finally:
        torch.set_num_threads(n)
    assert r.exit_code == 0, r.output
    return data / "model"


def test_happy_path(data: Path, model: Path) -> None:
    names = ["config.json", "history.csv", "model.safetensors", "run.json"]
    assert sorted(p.name for p in model.iterdir()) == names
    run = json.loads((model / "run.json").read_text())
    assert run["settings"]["scales"] == [0.5, 1.0]
    assert run["seed"] == 0
    assert len(pd.read_csv(model / "history.csv")) == 2
    out = data / "cands.csv"
    r = invoke(
        "detect", "--model", model, "--images", data / "test", "--out", out,
        "--threshold", 0.0, "--maps", data / "maps",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    cands = pd.read_csv(out)
    assert list(cands.columns) == ["image", "x", "y", "score"]
    assert len(cands) > 0
    assert json.loads((data / "cands.csv.json").read_text())["n_candidates"] == len(cands)
    assert sorted(p.name for p in (data / "maps").iterdir())[:2] == [
        "synthetic_000.npy",
        "synthetic_000.png",
    ]
    r = invoke(
        "evaluate", "--candidates", out, "--points", data / "test" / "points.csv",
        "--radius", 15, "--out", data / "per_image.csv",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    n_ref = pd.read_csv(data / "test" / "points.csv")["x"].notna().sum()
    assert summary["tp"] + summary["fn"] == n_ref
    assert summary["tp"] + summary["fp"] == len(cands)
    assert summary["radius"] == 15.0
    assert len(pd.read_csv(data / "per_image.csv")) == 2


def test_bad_input_exits_2(data: Path, model: Path, tmp_path: Path) -> None:
    pts = tmp_path / "bad.csv"
    pd.DataFrame({"image": ["zzz"], "x": [500.0], "y": [3.0]}).to_csv(pts, index=False)
    r = invoke("train", "--images", data / "train", "--points", pts, "--out", tmp_path / "m")
    assert_user_error(r, "not in .*zzz")
    r = invoke("train", "--images", data / "train", "--points", data / "train" / "points.csv",
               "--out", tmp_path / "m", "--scales", "0,1")  # fmt: skip
    assert_user_error(r, "--scales")
    r = invoke(
        "detect", "--model", tmp_path, "--images", data / "test", "--out", tmp_path / "c.csv"
    )
    assert_user_error(r, "config.json' is missing")
    r = invoke(
        "detect", "--model", model, "--images", tmp_path / "none", "--out", tmp_path / "c.csv"
    )
    assert_user_error(r, "does not exist")
    r = invoke("evaluate", "--candidates", pts, "--points", data / "test" / "points.csv")
    assert_user_error(r, "without reference rows")
    r = invoke("evaluate", "--candidates", tmp_path / "x.csv", "--points", pts)
    assert_user_error(r, "does not exist")
    assert not (tmp_path / "m").exists()
    assert not (tmp_path / "c.csv").exists()


def test_real_subprocess_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "crowdmed", "mitosis", "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for command in ("synthesize", "train", "detect", "evaluate"):
        assert command in proc.stdout
