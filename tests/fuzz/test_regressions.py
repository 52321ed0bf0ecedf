"""Regression corpus: inputs that once gave a silently wrong result, a traceback or no bound.

Each test is one case found by trying every command with bad or unusual inputs. The contract
is the one of every command: exit 0 with a correct result, or exit code 2 with one line
``Error: ...`` naming the file or option, no traceback, nothing written, inputs unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crowdmed.cli import app


# ---------------------------------------------------------------------- helpers
def invoke(*args: Any) -> Any:
    """``crowdmed ARGS`` in-process (paths and numbers passed as text)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result: Any, pattern: str) -> str:
    """Exit code 2, no traceback and exactly one ``Error:`` line matching ``pattern``."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def digest(*paths: Path) -> dict[str, str]:
    """SHA-256 of every file under ``paths`` (to check that inputs are left unchanged)."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def features(tmp_path: Path) -> dict[str, Path]:
    """60 items with 3 annotators, 4 features each (classes 'neg'/'pos')."""
    rng = np.random.default_rng(0)
    n = 60
    x = rng.normal(size=(n, 4)).astype(np.float32)
    truth = (x[:, 0] > 0).astype(int)
    ids = [f"case{i:03d}" for i in range(n)]
    rows = [
        (ids[i], f"r{a}", ("neg", "pos")[truth[i] if rng.random() < acc else 1 - truth[i]])
        for i in range(n)
        for a, acc in enumerate((0.9, 0.8, 0.7))
    ]
    data = tmp_path / "data"
    data.mkdir()
    paths = {"labels": data / "labels.csv", "x": data / "x.npy", "ids": data / "ids.txt"}
    pd.DataFrame(rows, columns=["item", "annotator", "label"]).to_csv(paths["labels"], index=False)
    np.save(paths["x"], x)
    paths["ids"].write_text("\n".join(ids) + "\n", encoding="utf-8")
    return paths


def train(paths: dict[str, Path], out: Path, *extra: Any, epochs: int = 2) -> Any:
    return invoke(
        "train",
        "classify",
        "--labels",
        paths["labels"],
        "--features",
        paths["x"],
        "--feature-ids",
        paths["ids"],
        "--out",
        out,
        "--epochs",
        epochs,
        "--batch-size",
        16,
        "--patience",
        0,
        *extra,
    )


def predict(model: Path, paths: dict[str, Path], out: Path) -> Any:
    return invoke(
        "predict", model, "--features", paths["x"], "--feature-ids", paths["ids"], "--out", out
    )


# ---------------------------------------------------------------------- training that diverges
def test_huge_lr_is_refused_before_training(features: dict[str, Path], tmp_path: Path) -> None:
    before = digest(features["labels"].parent)
    out = tmp_path / "model"
    error_line(train(features, out, "--lr", "1e30"), r"`--lr` must be a number > 0 and <= 10")
    assert not out.exists()
    assert digest(features["labels"].parent) == before


def test_nan_loss_stops_training_with_exit_2_and_no_model(
    features: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from crowdmed.training.engine import Engine

    # a loss that becomes NaN in epoch 2, as a diverging learning rate makes it
    original = Engine._train_epoch

    def diverging(self: Engine, task: Any, *args: Any) -> Any:
        if self.epoch == 1:
            real = task.train_batch

            def nan_batch(idx: torch.Tensor, engine: Engine) -> Any:
                out = real(idx, engine)
                loss, extras = out if isinstance(out, tuple) else (out, {})
                return loss * float("nan"), extras

            monkeypatch.setattr(task, "train_batch", nan_batch)
        return original(self, task, *args)

    monkeypatch.setattr(Engine, "_train_epoch", diverging)
    out = tmp_path / "model"
    line = error_line(
        train(features, out, epochs=3),
        r"the loss became NaN at epoch 2 step 1; lower --lr \(now 0\.001\) and add "
        r"--no-resume \(the checkpoint of the last finite epoch is kept in '.*checkpoint",
    )
    assert "Traceback" not in line
    for name in ("model.safetensors", "config.json", "annotators.csv", "run.json"):
        assert not (out / name).exists(), name
    # the last finite epoch stays checkpointed
    from crowdmed.training.engine import read_checkpoint

    meta, tensors = read_checkpoint(out / "checkpoint" / "checkpoint.safetensors")
    assert len(meta["history"]) == 1
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def test_predict_refuses_nan_weights(features: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    assert train(features, model).exit_code == 0
    weights = model / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.startswith("network/"))
    tensors[name][...] = float("nan")
    save_file(tensors, str(weights), metadata={"format": "crowdmed", "task": "classifier"})
    before = digest(model)
    out = tmp_path / "pred.csv"
    error_line(predict(model, features, out), r"model\.safetensors' holds NaN or infinite")
    assert not out.exists()
    assert digest(model) == before


def test_resume_into_a_longer_run_is_refused(features: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert train(features, model, epochs=3).exit_code == 0
    before = digest(model)
    error_line(train(features, model, epochs=2), r"holds 3 finished epochs.*--epochs 3 or more")
    assert digest(model) == before
    assert json.loads((model / "run.json").read_text())["arguments"]["epochs"] == 3


def test_corrupt_training_checkpoint_is_one_line(features: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert train(features, model, epochs=2).exit_code == 0
    ckpt = model / "checkpoint" / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    error_line(train(features, model, epochs=3), r"checkpoint\.safetensors")


def test_data_json_with_other_classes_than_the_weights(
    features: dict[str, Path], tmp_path: Path
) -> None:
    model = tmp_path / "model"
    assert train(features, model).exit_code == 0
    data = json.loads((model / "data.json").read_text())
    data["classes"] = ["a", "b", "c"]
    (model / "data.json").write_text(json.dumps(data))
    error_line(predict(model, features, tmp_path / "p.csv"), r"data\.json' lists 3 classes")


def test_config_with_a_bad_value_names_the_file(features: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert train(features, model).exit_code == 0
    config = json.loads((model / "config.json").read_text())
    config["fitted"]["n_classes"] = "two"
    (model / "config.json").write_text(json.dumps(config))
    error_line(predict(model, features, tmp_path / "p.csv"), r"config\.json' is not a valid")


def test_edited_legacy_mitosis_model_pt_is_one_line(tmp_path: Path) -> None:
    import torch

    from crowdmed.pathology import detector as det

    net = {"n_classes": 2, "channels": [8, 16, 32], "hidden": 32}
    model = det.AggNetCNN(n_classes=2, channels=(8, 16, 32), hidden=32)
    payload = {
        "format": det._LEGACY_FORMAT,
        "format_version": 1,
        "network": net,
        "state_dicts": [model.state_dict()],
        "scales": [1.0],
        "radius": 30.0,
        "threshold": 0.5,
    }
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    det.load_detector(path)  # the unedited file loads
    edited = dict(payload, network=dict(net, hidden=64))
    torch.save(edited, path)
    with pytest.raises(ValueError, match=r"model\.pt' is not a valid mitosis detector"):
        det.load_detector(path)
    torch.save({k: v for k, v in payload.items() if k != "state_dicts"}, path)
    with pytest.raises(ValueError, match=r"model\.pt' is not a valid mitosis detector"):
        det.load_detector(path)


# ---------------------------------------------------------------------- option bounds
def test_train_image_size_100000_is_refused(features: dict[str, Path], tmp_path: Path) -> None:
    error_line(train(features, tmp_path / "m", "--image-size", 100000), r"`--image-size` must be")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--patch-size", "100000"], "--patch-size"),
        (["--gold-rate", "nan"], "--gold-rate"),
        (["--threshold", "nan"], "--threshold"),
    ],
)
def test_crowd_export_bounds(tmp_path: Path, args: list[str], option: str) -> None:
    cands = tmp_path / "c.csv"
    cands.write_text("image,x,y,score\na,1,1,0.5\n", encoding="utf-8")
    out = tmp_path / "pkg"
    error_line(
        invoke("crowd", "export", cands, "--images", tmp_path, "--out", out, *args),
        rf"`{option}` must be",
    )
    assert not out.exists()


@pytest.mark.parametrize("n", ["100000000", "0", "-3"])
def test_crowd_simulate_annotators_bounds(tmp_path: Path, n: str) -> None:
    out = tmp_path / "votes.csv"
    error_line(
        invoke(
            "crowd",
            "simulate",
            "--package",
            tmp_path,
            "--points",
            tmp_path / "p.csv",
            "--out",
            out,
            "--annotators",
            n,
        ),
        r"`--annotators` must be an integer from 1 to 100000",
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["masks", "consensus", "a.npy", "b.npy", "-o", "o.npy", "--threshold", "nan"],
        ["boxes", "fuse", "b.csv", "-o", "o.csv", "--iou", "nan"],
        ["boxes", "fuse", "b.csv", "-o", "o.csv", "--min-confidence", "nan"],
        ["mitosis", "detect", "--model", "m", "--images", "i", "-o", "o.csv", "--threshold", "nan"],
        ["mitosis", "evaluate", "--candidates", "c", "--points", "p", "--threshold", "nan"],
        ["crowd", "export", "c.csv", "--images", "i", "--out", "o", "--threshold", "nan"],
        ["aggregate", "l.csv", "-o", "o.csv", "--tol", "nan"],
        ["serve", "init", "--images", "i", "--pass-mark", "nan"],
    ],
    ids=lambda a: " ".join(a[:2]) + " " + a[-2],
)
def test_nan_thresholds_are_refused_by_every_command(tmp_path: Path, args: list[str]) -> None:
    error_line(invoke(*args), rf"`{re.escape(args[-2])}` must be .*; got nan")


def test_mitosis_synthesize_size_is_bounded(tmp_path: Path) -> None:
    out = tmp_path / "f"
    error_line(invoke("mitosis", "synthesize", "--out", out, "--size", 100000), r"`--size`")
    assert not out.exists()


# ---------------------------------------------------------------------- input layer


def _aggregate(tmp_path: Path, text: str, *extra: str) -> tuple[Any, Path]:
    labels = tmp_path / "labels.csv"
    labels.write_text(text, encoding="utf-8")
    out = tmp_path / "consensus.csv"
    return invoke("aggregate", labels, "-o", out, *extra), out


def test_item_ids_are_kept_as_written(tmp_path: Path) -> None:
    text = "item,annotator,label\n007,01,a\n007,02,a\n1,01,b\n01,01,a\n1.0,01,b\n"
    result, out = _aggregate(tmp_path, text)
    assert result.exit_code == 0, result.output
    items = pd.read_csv(out, dtype=str)["item"].tolist()
    assert sorted(items) == sorted(["007", "1", "01", "1.0"])


def test_annotator_ids_are_kept_as_written(tmp_path: Path) -> None:
    text = "item,annotator,label\na,01,x\na,1,y\nb,01,x\nb,1,x\n"
    labels = tmp_path / "labels.csv"
    labels.write_text(text, encoding="utf-8")
    ann = tmp_path / "annotators.csv"
    result = invoke("aggregate", labels, "-o", tmp_path / "c.csv", "-a", ann)
    assert result.exit_code == 0, result.output
    assert sorted(pd.read_csv(ann, dtype=str)["annotator"]) == ["01", "1"]


def test_minus_one_is_missing_not_a_class(tmp_path: Path) -> None:
    text = "item,annotator,label\na,r1,0\na,r2,1\na,r3,-1\nb,r1,1\nb,r2,1\nb,r3,-1\n"
    result, out = _aggregate(tmp_path, text)
    assert result.exit_code == 0, result.output
    assert "p_-1" not in pd.read_csv(out).columns


@pytest.mark.parametrize("odd", ["cat", "0.5", "inf"])
def test_a_stray_label_is_an_error_listing_it(tmp_path: Path, odd: str) -> None:
    text = f"item,annotator,label\na,r1,0\na,r2,1\nb,r1,1\nb,r2,{odd}\nc,r1,0\nc,r2,0\n"
    result, out = _aggregate(tmp_path, text)
    error_line(result, re.escape(odd))
    assert not out.exists()


def test_a_column_used_twice_is_refused(tmp_path: Path) -> None:
    text = "item,annotator,label\na,r1,x\na,r2,y\nb,r1,x\n"
    result, out = _aggregate(tmp_path, text, "--label-col", "item")
    error_line(result, r"item")
    assert not out.exists()


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A task package of two synthetic fields (no gold questions)."""
    from crowdmed.pathology.synthetic import make_synthetic_fields

    fields = make_synthetic_fields(2, size=(64, 64), n_mitoses=(1, 2), random_state=0)
    fields.save(tmp_path / "fields")
    cands = fields.points.assign(score=0.9)
    cands.to_csv(tmp_path / "candidates.csv", index=False)
    pkg = tmp_path / "pkg"
    result = invoke(
        "crowd", "export", tmp_path / "candidates.csv", "--images", tmp_path / "fields",
        "--out", pkg, "--gold-rate", 0, "--patch-size", 15,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return pkg


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"], ids=["empty", "bom-only"])
def test_a_zero_byte_votes_file_is_one_line(tmp_path: Path, package: Path, content: bytes) -> None:
    votes = tmp_path / "votes.csv"
    votes.write_bytes(content)
    out = tmp_path / "labels.csv"
    result = invoke("crowd", "import", votes, "--package", package, "--out", out)
    error_line(result, r"votes\.csv")
    assert not out.exists()


def test_a_bom_in_a_votes_file_is_stripped(tmp_path: Path, package: Path) -> None:
    tasks = pd.read_csv(package / "manifest.csv")["task"].astype(str).tolist()
    text = "task,annotator,label\n" + "".join(f"{t},w1,mitosis\n" for t in tasks)
    votes = tmp_path / "votes.csv"
    votes.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    out = tmp_path / "labels.csv"
    result = invoke("crowd", "import", votes, "--package", package, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == len(tasks)


def test_all_minus_one_mask_is_not_annotated(tmp_path: Path) -> None:
    a = np.zeros((4, 4), dtype=np.int64)
    a[1:3, 1:3] = 1
    files = []
    for i, m in enumerate([a, a, np.full((4, 4), -1)]):
        files.append(tmp_path / f"r{i}.npy")
        np.save(files[-1], m)
    out = tmp_path / "c.npy"
    result = invoke("masks", "consensus", *files, "-o", out, "-m", "mean")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(out).astype(int), a)


@pytest.mark.parametrize("score", ["nan", "-0.5", "1.5"])
def test_boxes_fuse_refuses_bad_scores(tmp_path: Path, score: str) -> None:
    boxes = tmp_path / "b.csv"
    boxes.write_text(
        "image,reader,label,xmin,ymin,xmax,ymax,score\n"
        f"a,r1,x,1,1,5,5,0.9\na,r2,x,1,1,5,5,{score}\n",
        encoding="utf-8",
    )
    out = tmp_path / "o.csv"
    error_line(invoke("boxes", "fuse", boxes, "-o", out), r"score")
    assert not out.exists()


def test_boxes_fuse_refuses_negative_coordinates(tmp_path: Path) -> None:
    boxes = tmp_path / "b.csv"
    boxes.write_text(
        "image,reader,label,xmin,ymin,xmax,ymax\na,r1,x,-4,1,5,5\na,r2,x,1,1,5,5\n",
        encoding="utf-8",
    )
    out = tmp_path / "o.csv"
    error_line(invoke("boxes", "fuse", boxes, "-o", out), r"b\.csv")
    assert not out.exists()


def test_boxes_fuse_uses_the_scores(tmp_path: Path) -> None:
    rows = "image,reader,label,xmin,ymin,xmax,ymax,score\n"
    low = tmp_path / "low.csv"
    low.write_text(rows + "a,r1,x,0,0,10,10,0.9\na,r2,x,0,0,20,20,0.1\n", encoding="utf-8")
    high = tmp_path / "high.csv"
    high.write_text(rows + "a,r1,x,0,0,10,10,0.1\na,r2,x,0,0,20,20,0.9\n", encoding="utf-8")
    outs = []
    for src in (low, high):
        out = tmp_path / f"o_{src.stem}.csv"
        result = invoke("boxes", "fuse", src, "-o", out, "--iou", "0.2")
        assert result.exit_code == 0, result.output
        outs.append(pd.read_csv(out))
    assert float(outs[0]["xmax"].iloc[0]) < float(outs[1]["xmax"].iloc[0])


def test_legacy_mitosis_model_pt_with_nan_weights_is_refused(tmp_path: Path) -> None:
    import torch

    from crowdmed.pathology import detector as det

    model = det.AggNetCNN(n_classes=2, channels=(8, 16, 32), hidden=32)
    state = model.state_dict()
    next(v for v in state.values() if v.is_floating_point())[...] = float("nan")
    payload = {
        "format": det._LEGACY_FORMAT,
        "format_version": 1,
        "network": {"n_classes": 2, "channels": [8, 16, 32], "hidden": 32},
        "state_dicts": [state],
        "scales": [1.0],
        "radius": 30.0,
        "threshold": 0.5,
    }
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"model\.pt' holds NaN or infinite weights"):
        det.load_detector(path)


def test_a_write_error_names_the_output_not_its_temporary_file(tmp_path: Path) -> None:
    from crowdmed.cli._common import _staged_outputs

    def write() -> None:
        with _staged_outputs() as stage:
            tmp = stage(tmp_path / "out.csv")
            raise OSError(f"[Errno 28] No space left on device: '{tmp}'")

    with pytest.raises(ValueError, match=r"No space left on device: '.*/out\.csv'$"):
        write()
    assert list(tmp_path.iterdir()) == []


def test_a_derived_size_beyond_the_free_memory_is_refused_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from crowdmed.pipelines import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)  # 1 MiB free
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(images / f"c{i}.png")
        rows += [(f"c{i}", "r1", i % 2), (f"c{i}", "r2", i % 2)]
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["item", "annotator", "label"]).to_csv(labels, index=False)
    out = tmp_path / "model"
    result = invoke(
        "train", "classify", "--labels", labels, "--images", images, "--out", out,
        "--image-size", 512,
    )  # fmt: skip
    error_line(result, r"4 images resized to --image-size 512 need about .* GiB of memory")
    assert not out.exists()
    fields = tmp_path / "fields"
    result = invoke("mitosis", "synthesize", "--out", fields, "--size", 1024)
    error_line(result, r"20 fields of 1024 x 1024 pixels need about .*; lower --size")
    assert not fields.exists()
