"""Model folders: config.json + model.safetensors, checked on reading, never a pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from crowdmed.training import persistence
from crowdmed.training.persistence import (
    FORMAT_VERSION,
    load_model,
    read_folder,
    register_loader,
    save_folder,
)


def _save(path: Path) -> Path:
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    return save_folder(path, task="toy", config={"classes": ["a", "b"]}, tensors=tensors)


def test_round_trip(tmp_path: Path) -> None:
    folder = _save(tmp_path / "m")
    config, tensors = read_folder(folder, task="toy")
    assert config["task"] == "toy"
    assert config["format_version"] == FORMAT_VERSION
    assert config["classes"] == ["a", "b"]
    assert torch.equal(tensors["w"], torch.arange(6.0).reshape(2, 3))
    assert tensors["b"].dtype == torch.int64
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    # no temporary folder is left behind
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_save_into_existing_folder_keeps_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    _save(folder)
    _save(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "run.json",
    ]


def _one_line(exc: pytest.ExceptionInfo[ValueError]) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_corrupt_config(tmp_path: Path) -> None:
    folder = _save(tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"Cannot read '.*config\.json'") as info:
        read_folder(folder)
    _one_line(info)


def test_missing_config_and_weights(tmp_path: Path) -> None:
    folder = _save(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model\.safetensors' is missing"):
        read_folder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match=r"config\.json' is missing"):
        read_folder(folder)
    with pytest.raises(ValueError, match=r"does not exist"):
        read_folder(tmp_path / "nowhere")


def test_truncated_weights(tmp_path: Path) -> None:
    folder = _save(tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"Cannot read '.*model\.safetensors'") as info:
        read_folder(folder)
    _one_line(info)


def test_missing_tensor_and_other_shape(tmp_path: Path) -> None:
    folder = _save(tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tensors"]["extra"] = [[1], "float32"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model\.safetensors' does not match.*'extra'") as info:
        read_folder(folder)
    _one_line(info)
    del cfg["tensors"]["extra"]
    cfg["tensors"]["w"] = [[3, 2], "float32"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"other shapes or dtypes for \['w'\]"):
        read_folder(folder)


def test_wrong_task_and_newer_format(tmp_path: Path) -> None:
    folder = _save(tmp_path / "m")
    with pytest.raises(ValueError, match=r"holds a 'toy' model, not a 'segmenter' model"):
        read_folder(folder, task="segmenter")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["format_version"] = FORMAT_VERSION + 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"newer than"):
        read_folder(folder)


def test_reserved_keys_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"reserved keys \['task'\]"):
        save_folder(tmp_path / "m", task="toy", config={"task": 1}, tensors={})


def test_load_model_dispatches_on_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _save(tmp_path / "m")
    monkeypatch.setattr(persistence, "_LOADERS", dict(persistence._LOADERS))
    with pytest.raises(ValueError, match=r"task 'toy', which no loader handles"):
        load_model(folder)
    seen: dict[str, Any] = {}

    def loader(path: Path, *, device: Any = None, **kwargs: Any) -> str:
        seen.update(path=path, device=device, **kwargs)
        return "model"

    register_loader("toy", loader)
    assert load_model(folder, device="cpu", extra=1) == "model"
    assert seen == {"path": folder, "device": "cpu", "extra": 1}


def test_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _save(tmp_path / "m")

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load must not be called")

    monkeypatch.setattr(torch, "load", boom)
    read_folder(folder)


def test_other_dtype_and_non_finite_weights_are_refused(tmp_path: Path) -> None:
    folder = _save(tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tensors"]["w"] = [[2, 3], "float64"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"other shapes or dtypes for \['w'\]"):
        read_folder(folder)
    for bad in (float("nan"), float("inf")):
        w = torch.arange(6.0).reshape(2, 3)
        w[1, 2] = bad
        save_folder(tmp_path / "n", task="toy", config={}, tensors={"net/w": w})
        with pytest.raises(ValueError, match=r"holds NaN or infinite weights \(in \['net/w'\]\)"):
            read_folder(tmp_path / "n")
    # a fitted attribute outside any module may hold NaN ("not estimated")
    save_folder(tmp_path / "q", task="toy", config={}, tensors={"quiz": torch.tensor([0.5, 1e400])})
    assert torch.isinf(read_folder(tmp_path / "q")[1]["quiz"][1])


def test_a_loader_error_names_the_config(tmp_path: Path) -> None:
    def loader(path: Any, device: Any = None) -> Any:
        return int(read_folder(path)[0]["classes"][0])

    register_loader("toy-int", loader)
    save_folder(tmp_path / "m", task="toy-int", config={"classes": ["a"]}, tensors={})
    with pytest.raises(ValueError, match=r"config\.json' is not a valid toy-int config") as info:
        load_model(tmp_path / "m")
    _one_line(info)
