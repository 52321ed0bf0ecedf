"""``crowdmed train segment --method confusion-pixel|confusion-global``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from crowdmed.pipelines.segment import load_segmentation_model  # noqa: E402


@pytest.mark.parametrize("method", ["confusion-pixel", "confusion-global"])
def test_confusion_methods_train_save_and_reload(
    method: str, seg_cases: dict[str, Path], tmp_path: Path, cli: Any
) -> None:
    out = tmp_path / method
    res = cli(
        "train", "segment", "--images", seg_cases["images"], "--masks", seg_cases["masks"],
        "--out", out, "--epochs", 1, "--batch-size", 3, "--unet-channels", "4,8",
        "--method", method,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((out / "data.json").read_text())["method"] == method
    config = json.loads((out / "config.json").read_text())
    kind = "pixel" if method == "confusion-pixel" else "global"
    assert config["confusion_network"]["kind"] == kind
    assert config["confusion_network"]["n_raters"] == 3
    model = load_segmentation_model(out)
    seg = getattr(model, "segmenter", model)
    assert seg.confusion_network_ is not None


def test_trace_weight_reaches_the_loss_and_the_model(
    seg_cases: dict[str, Path], tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crowdmed.training.segmenter as segmenter_module

    seen: list[float] = []
    original = segmenter_module.confusion_batch_loss

    def spy(*args: Any) -> Any:
        seen.append(args[-1])  # the trace weight the batch loss is computed with
        return original(*args)

    monkeypatch.setattr(segmenter_module, "confusion_batch_loss", spy)
    out = tmp_path / "m"
    res = cli(
        "train", "segment", "--images", seg_cases["images"], "--masks", seg_cases["masks"],
        "--out", out, "--epochs", 1, "--batch-size", 3, "--unet-channels", "4,8",
        "--method", "confusion-global", "--trace-weight", "0.375",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert seen == [0.375, 0.375]  # 6 images in batches of 3
    assert json.loads((out / "run.json").read_text())["params"]["trace_weight"] == 0.375
    assert json.loads((out / "data.json").read_text())["trace_weight"] == 0.375
    model = load_segmentation_model(out)
    assert getattr(model, "segmenter", model).trace_weight == 0.375


def test_trace_weight_default_and_range(
    seg_cases: dict[str, Path], tmp_path: Path, cli: Any
) -> None:
    import inspect

    from crowdmed.cli.train_segment import segment
    from crowdmed.training.segmenter import CrowdSegmenter

    default = inspect.signature(CrowdSegmenter).parameters["trace_weight"].default
    assert inspect.signature(segment).parameters["trace_weight"].default == default
    for value in ("-0.1", "101", "nan"):
        res = cli(
            "train", "segment", "--images", seg_cases["images"], "--masks",
            seg_cases["masks"], "--out", tmp_path / "bad", "--method", "confusion-pixel",
            "--trace-weight", value,
        )  # fmt: skip
        assert res.exit_code == 2, value
        assert "`--trace-weight` must be a number from 0 to 100" in res.output
        assert not (tmp_path / "bad").exists()
