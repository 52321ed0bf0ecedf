"""``--device`` of the training commands: checked while parsing, recorded, passed to the trainer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

COMMANDS = (["train", "detect"], ["train", "segment"], ["train", "classify"])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[1])
@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu0"])
def test_unknown_device_is_a_one_line_error(
    cli: Callable[..., Any], tmp_path: Path, command: list[str], device: str
) -> None:
    res = cli(*command, "--out", tmp_path / "model", "--device", device)
    assert res.exit_code == 2, res.output
    assert f"`--device` must be auto, cpu, cuda or cuda:N; got '{device}'." in res.output
    assert res.output.strip().count("\n") == 0
    assert not (tmp_path / "model").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[1])
def test_cuda_without_a_cuda_device_names_the_fix(
    cli: Callable[..., Any], tmp_path: Path, command: list[str]
) -> None:
    res = cli(*command, "--out", tmp_path / "model", "--device", "cuda:0")
    assert res.exit_code == 2, res.output
    assert "`--device cuda:0`: no CUDA device is available here; use `--device cpu`" in res.output
    assert not (tmp_path / "model").exists()


def test_the_device_reaches_the_trainer_and_the_records(
    cli: Callable[..., Any], box_readers: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    from crowdmed.training import detector as detector_module

    seen: list[Any] = []
    real_init = detector_module.CrowdDetector.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(kwargs.get("device", "default"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(detector_module.CrowdDetector, "__init__", spy)
    out = tmp_path / "model"
    res = cli(
        "train", "detect", "--boxes", box_readers["boxes"], "--images", box_readers["images"],
        "--out", out, "--epochs", 1, "--batch-size", 4, "--device", "CPU",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert seen == ["cpu"]
    assert json.loads((out / "run.json").read_text())["params"]["device"] == "cpu"
    assert json.loads((out / "data.json").read_text())["device"] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_auto_is_recorded_as_the_device_it_resolved_to(
    cli: Callable[..., Any], box_readers: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "model"
    res = cli(
        "train", "detect", "--boxes", box_readers["boxes"], "--images", box_readers["images"],
        "--out", out, "--epochs", 1, "--batch-size", 4,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    record = json.loads((out / "run.json").read_text())
    assert record["params"]["device"] == "auto"  # what was asked
    assert record["fit"]["device"] == "cpu"  # where it ran


def test_fit_device_resolves_auto() -> None:
    from crowdmed.pipelines.model_folder import fit_device

    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert fit_device("auto") == (None, expected)
    assert fit_device("cpu") == ("cpu", "cpu")
