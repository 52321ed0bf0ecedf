"""crowdmed serve init | invite | export | run, in-process and as a subprocess."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from crowdmed.cli import app
from crowdmed.crowdsourcing.server import open_study
from crowdmed.crowdsourcing.tasks import export_tasks

runner = CliRunner()


@pytest.fixture
def images(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        arr = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    pd.DataFrame({"item": ["img0", "img1", "img2"], "label": ["0", "2", "mild"]}).to_csv(
        tmp_path / "gold.csv", index=False
    )
    return folder


def invoke(*args):
    return runner.invoke(app, ["serve", *map(str, args)])


def test_init_invite_export_from_images(tmp_path, images):
    study = tmp_path / "study"
    r = invoke(
        "init",
        study,
        "--images",
        images,
        "--classes",
        "none,mild,severe",
        "--kind",
        "ordinal",
        "--gold",
        tmp_path / "gold.csv",
        "--quiz-size",
        "2",
        "--labels-per-item",
        "2",
        "--base-url",
        "http://host:9000",
    )
    assert r.exit_code == 0, r.output
    admin = re.search(r"http://host:9000/admin/login/([A-Za-z0-9_-]{32})", r.output)
    assert admin is not None
    settings = json.loads((study / "study.json").read_text())
    assert settings["classes"] == ["none", "mild", "severe"]
    assert settings["kind"] == "ordinal"
    assert (settings["quiz_size"], settings["labels_per_item"]) == (2, 2)
    assert len(list((study / "images").iterdir())) == 8

    r = invoke("invite", study, "ann-a", "ann-b", "--count", "2", "--out", tmp_path / "inv.csv")
    assert r.exit_code == 0, r.output
    links = re.findall(r"^(\S+)\thttp://127\.0\.0\.1:8000/a/([A-Za-z0-9_-]{32})$", r.output, re.M)
    assert [n for n, _ in links] == ["ann-a", "ann-b", "annotator-1", "annotator-2"]
    inv = pd.read_csv(tmp_path / "inv.csv")
    assert list(inv["name"]) == ["ann-a", "ann-b", "annotator-1", "annotator-2"]
    st = open_study(study)
    assert st.storage.principal(links[0][1]).name == "ann-a"
    assert st.storage.principal(admin.group(1)).role == "admin"
    st.close()
    r = invoke("invite", study, "ann-a")
    assert r.exit_code == 2
    assert "taken" in r.output
    r = invoke("invite", study, "--admin")
    assert r.exit_code == 0
    assert re.search(r"^admin\thttp://\S+/admin/login/\S{32}$", r.output, re.M)

    r = invoke("export", study, "--out", tmp_path / "votes.csv")
    assert r.exit_code == 0, r.output
    assert list(pd.read_csv(tmp_path / "votes.csv").columns) == [
        "item",
        "annotator",
        "label",
        "gold",
        "quiz_accuracy",
    ]
    assert invoke("export", study, "--out", tmp_path / "votes.csv").exit_code == 2
    assert invoke("export", study, "--out", tmp_path / "votes.csv", "--overwrite").exit_code == 0


def test_init_from_a_task_package(tmp_path, fields):
    imgs, cand, gold = fields
    pkg = export_tasks(imgs, cand, tmp_path / "pkg", gold=gold, gold_rate=0.2, random_state=0)
    r = invoke("init", tmp_path / "study", "--package", pkg.path, "--quiz-size", "3")
    assert r.exit_code == 0, r.output
    assert f"{len(cand)} items and {pkg.n_gold} gold items" in r.output
    st = open_study(tmp_path / "study")
    assert st.settings.classes == ("not mitosis", "mitosis")
    assert st.settings.gold_share == 0.1
    gold_items = {r["item"]: r["gold"] for r in st.storage.items() if r["gold"] is not None}
    expected = dict(zip(pkg.gold["task"], pkg.gold["label"], strict=True))
    assert gold_items == expected
    st.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "IMG"], "needs --classes"),
        (["--images", "IMG", "--classes", "a"], "at least two"),
        (["--images", "IMG", "--classes", "a,b", "--quiz-size", "3"], "at most the number of gold"),
        (["--images", "IMG", "--classes", "a,b", "--pass-mark", "1.5"], "`--pass-mark` must be"),
        (["--images", "IMG", "--classes", "a,b", "--kind", "binar"], "`kind` must be one of"),
        ([], "Pass --package"),
        (["--package", "IMG"], "missing"),
    ],
)
def test_init_errors_are_one_line_and_write_nothing(tmp_path, images, args, message):
    args = [str(images) if a == "IMG" else a for a in args]
    r = invoke("init", tmp_path / "study", *args)
    assert r.exit_code == 2
    assert message in r.output
    assert not (tmp_path / "study").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".study")] == []


def test_serve_study_runs_the_server(tmp_path, images, monkeypatch):
    assert invoke("init", tmp_path / "s", "--images", images, "--classes", "a,b").exit_code == 0
    calls = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    r = invoke(tmp_path / "s", "--port", "8123", "--host", "0.0.0.0")
    assert r.exit_code == 0, r.output
    assert calls[0][1]["port"] == 8123
    assert calls[0][1]["host"] == "0.0.0.0"
    assert calls[0][0].state.study.settings.classes == ("a", "b")
    r = invoke("run", tmp_path / "s")
    assert r.exit_code == 0
    assert calls[1][1]["port"] == 8000
    r = invoke(tmp_path / "missing")
    assert r.exit_code == 2
    assert "does not exist" in r.output


def test_missing_extra_names_it(monkeypatch, tmp_path):
    import crowdmed.cli.serve as serve

    monkeypatch.setattr(serve, "_missing_extra", lambda: ["fastapi"])
    r = invoke("init", tmp_path / "s", "--images", tmp_path)
    assert r.exit_code == 2
    assert "pip install 'crowdmed[serve]'" in r.output
    r = runner.invoke(app, ["serve"])
    assert r.exit_code == 2
    assert "crowdmed[serve]" in r.output


def test_serve_help_as_a_subprocess():
    r = subprocess.run(
        [sys.executable, "-m", "crowdmed", "serve", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    for word in ("init", "invite", "export", "run"):
        assert word in r.stdout


def test_scores_command(tmp_path, images):
    assert invoke("init", tmp_path / "s", "--images", images, "--classes", "a,b").exit_code == 0
    pd.DataFrame({"item": ["img3", "img5"], "score": [1.5, 3]}).to_csv(
        tmp_path / "next.csv", index=False
    )
    r = invoke("scores", tmp_path / "s", tmp_path / "next.csv")
    assert r.exit_code == 0, r.output
    assert "2 items" in r.output
    st = open_study(tmp_path / "s")
    assert {r["item"]: r["priority"] for r in st.storage.items()}["img5"] == 3.0
    st.close()
    pd.DataFrame({"item": ["zzz"], "score": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    r = invoke("scores", tmp_path / "s", tmp_path / "bad.csv")
    assert r.exit_code == 2
    assert "not in study" in r.output
