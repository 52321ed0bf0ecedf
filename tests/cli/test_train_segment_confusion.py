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
