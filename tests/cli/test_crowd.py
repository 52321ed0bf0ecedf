"""The crowd loop commands: `crowdmed crowd export|simulate|import` and `crowdmed refine`."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crowdmed.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic fields on disk, candidates near points and elsewhere, a gold pool."""
    from crowdmed.pathology.synthetic import make_synthetic_fields

    root = tmp_path_factory.mktemp("world")
    fields = make_synthetic_fields(4, size=(96, 96), n_mitoses=(1, 2), random_state=0)
    fields.save(root / "fields")
    rng = np.random.default_rng(0)
    crowd = fields.points[fields.points["image"].isin(fields.names[:3])]
    cands = pd.concat(
        [
            crowd.assign(score=0.9),
            pd.DataFrame(
                {
                    "image": np.repeat(fields.names[:3], 5),
                    "x": rng.integers(5, 90, 15).astype(float),
                    "y": rng.integers(5, 90, 15).astype(float),
                    "score": rng.uniform(0.01, 0.6, 15),
                }
            ),
        ],
        ignore_index=True,
    )
    cands.to_csv(root / "candidates.csv", index=False)
    g = fields.points[fields.points["image"] == fields.names[3]]
    gold = pd.concat(
        [
            g.assign(label="mitosis"),
            pd.DataFrame(
                {
                    "image": fields.names[3],
                    "x": [10.0, 80.0, 50.0],
                    "y": [10.0, 20.0, 85.0],
                    "label": "not mitosis",
                }
            ),
        ]
    )
    gold.to_csv(root / "gold.csv", index=False)
    return root, fields


def _run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_crowd_cli_happy_path(world, tmp_path):
    torch = pytest.importorskip("torch")
    from crowdmed.nn.aggnet import AggNetCNN
    from crowdmed.pathology.detector import MultiScaleDetector, load_detector

    root, _fields = world
    pkg = tmp_path / "pkg"
    r = _run(
        "crowd",
        "export",
        root / "candidates.csv",
        "--images",
        root / "fields",
        "--out",
        pkg,
        "--threshold",
        "0.05",
        "--gold",
        root / "gold.csv",
        "--gold-rate",
        "0.15",
        "--patch-size",
        "33",
        "--seed",
        "3",
    )
    assert r.exit_code == 0, r.output
    m = pd.read_csv(pkg / "manifest.csv")
    assert m["is_gold"].sum() >= 1
    assert (pkg / "label_studio" / "tasks.json").is_file()
    votes = tmp_path / "votes.csv"
    r = _run(
        "crowd",
        "simulate",
        "--package",
        pkg,
        "--points",
        root / "fields" / "points.csv",
        "--out",
        votes,
        "--annotators",
        "12",
        "--votes-per-task",
        "10",
    )
    assert r.exit_code == 0, r.output
    v = pd.read_csv(votes)
    assert v.groupby("task").size().eq(10).all()
    assert (tmp_path / "votes.annotators.csv").is_file()
    labels = tmp_path / "labels.csv"
    r = _run("crowd", "import", votes, "--package", pkg, "--out", labels)
    assert r.exit_code == 0, r.output
    lab = pd.read_csv(labels)
    assert len(lab) == len(v)
    assert {"gold", "quiz_accuracy"} <= set(lab.columns)
    rec = json.loads((tmp_path / "labels.csv.json").read_text())
    assert rec["n_votes"] == len(v)
    assert rec["n_problems"] == 0

    with torch.random.fork_rng():
        torch.manual_seed(0)
        det = MultiScaleDetector([0.33, 0.66, 1.0], [AggNetCNN() for _ in range(3)], radius=15)
    det.save(tmp_path / "model")
    out = tmp_path / "refined"
    for extra in ([], ["--images", root / "fields"]):
        r = _run(
            "refine",
            "--model",
            tmp_path / "model",
            "--package",
            pkg,
            "--votes",
            votes,
            "--out",
            out,
            "--epochs",
            "3",
            *extra,
        )
        assert r.exit_code == 0, r.output
    for name in (
        "config.json",
        "model.safetensors",
        "truth.csv",
        "annotators.csv",
        "history.csv",
        "run.json",
    ):
        assert (out / name).is_file(), name
    truth = pd.read_csv(out / "truth.csv")
    assert list(truth.columns[:3]) == ["task", "is_gold", "score"]
    assert len(truth) == len(m)
    ann = pd.read_csv(out / "annotators.csv")
    assert {"spammer_score", "quiz_accuracy", "sensitivity", "specificity"} <= set(ann.columns)
    run = json.loads((out / "run.json").read_text())
    assert run["refined_scale"] == 0.33
    assert run["settings"]["epochs"] == 3
    assert run["inputs"]["patches"] == "fields"
    refined = load_detector(out)
    assert not torch.equal(refined.models[0].fc2.weight, det.models[0].fc2.weight)
    assert torch.equal(refined.models[1].fc2.weight, det.models[1].fc2.weight)


def test_bad_input_exits_2_and_writes_nothing(world, tmp_path):
    root, _fields = world
    pkg = tmp_path / "pkg"
    # unknown image in the candidates
    bad = pd.read_csv(root / "candidates.csv")
    bad.loc[0, "image"] = "nope"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = _run(
        "crowd",
        "export",
        tmp_path / "bad.csv",
        "--images",
        root / "fields",
        "--out",
        pkg,
        "--gold-rate",
        "0",
    )
    assert r.exit_code == 2
    assert "Error:" in r.output
    assert "nope" in r.output
    assert not pkg.exists()
    r = _run("crowd", "export", root / "candidates.csv", "--images", root / "fields", "--out", pkg)
    assert r.exit_code == 2
    assert "--gold" in r.output
    # malformed votes: named by line, nothing written
    r = _run(
        "crowd",
        "export",
        root / "candidates.csv",
        "--images",
        root / "fields",
        "--out",
        pkg,
        "--gold-rate",
        "0",
    )
    assert r.exit_code == 0, r.output
    tasks = pd.read_csv(pkg / "manifest.csv")["task"]
    pd.DataFrame(
        {
            "task": [tasks[0], "zzz", tasks[1]],
            "annotator": ["a", "a", "a"],
            "label": ["mitosis", "1", "perhaps"],
        }
    ).to_csv(tmp_path / "v.csv", index=False)
    out = tmp_path / "labels.csv"
    r = _run("crowd", "import", tmp_path / "v.csv", "--package", pkg, "--out", out)
    assert r.exit_code == 2
    assert "line 3: unknown task id 'zzz'" in r.output
    assert "line 4: bad label" in r.output
    assert not out.exists()
    assert not (tmp_path / "labels.csv.json").exists()
    r = _run(
        "crowd", "import", tmp_path / "v.csv", "--package", pkg, "--out", out, "--on-error", "drop"
    )
    assert r.exit_code == 0
    assert "Skipped 2 rows" in r.output
    assert len(pd.read_csv(out)) == 1
    # refine: missing model folder
    r = _run(
        "refine",
        "--model",
        tmp_path / "none",
        "--package",
        pkg,
        "--votes",
        tmp_path / "v.csv",
        "--out",
        tmp_path / "ref",
    )
    assert r.exit_code == 2
    assert "does not exist" in r.output
    assert not (tmp_path / "ref").exists()


def test_subprocess_help():
    out = subprocess.run(
        [sys.executable, "-m", "crowdmed", "crowd", "export", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0
    assert "--gold-rate" in out.stdout


def test_crowd_gold_builds_pool(world, tmp_path):
    _root, fields = world
    name = fields.names[3]
    pts = fields.points[fields.points["image"] == name]
    cands = pd.concat(
        [
            pts.assign(x=pts["x"] + 2, score=0.9),  # near a mitosis: not a negative
            pd.DataFrame({"image": [name], "x": [5.0], "y": [5.0], "score": [0.2]}),
        ]
    )
    pts.to_csv(tmp_path / "p.csv", index=False)
    cands.to_csv(tmp_path / "c.csv", index=False)
    out = tmp_path / "gold.csv"
    r = _run(
        "crowd",
        "gold",
        "--points",
        tmp_path / "p.csv",
        "--candidates",
        tmp_path / "c.csv",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    gold = pd.read_csv(out)
    assert (gold["label"] == "mitosis").sum() == len(pts)
    assert gold.loc[gold["label"] == "not mitosis", ["x", "y"]].to_numpy().tolist() == [[5.0, 5.0]]
    cands.assign(image="elsewhere").to_csv(tmp_path / "c2.csv", index=False)
    r = _run(
        "crowd",
        "gold",
        "--points",
        tmp_path / "p.csv",
        "--candidates",
        tmp_path / "c2.csv",
        "--out",
        tmp_path / "g2.csv",
    )
    assert r.exit_code == 2
    assert "does not list" in r.output
    assert not (tmp_path / "g2.csv").exists()


def test_numeric_image_names_stay_text(tmp_path):
    """Fields named 001.png, 002.png: '001' in a CSV is the name, not the number 1."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "fields"
    folder.mkdir()
    for name in ("001", "002"):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
            folder / f"{name}.png"
        )
    (tmp_path / "c.csv").write_text("image,x,y,score\n001,5,6,0.9\n002.png,50,30,0.8\n")
    pkg = tmp_path / "pkg"
    r = _run("crowd", "export", tmp_path / "c.csv", "--images", folder, "--gold-rate", 0,
             "--out", pkg)  # fmt: skip
    assert r.exit_code == 0, r.output
    manifest = pd.read_csv(pkg / "manifest.csv", dtype={"image": str})
    assert sorted(manifest["image"]) == ["001", "002"]
    (tmp_path / "p.csv").write_text("image,x,y\n001,5,6\n002,,\n")
    r = _run("crowd", "simulate", "--package", pkg, "--points", tmp_path / "p.csv", "--out",
             tmp_path / "v.csv", "--annotators", 3, "--votes-per-task", 3)  # fmt: skip
    assert r.exit_code == 0, r.output
