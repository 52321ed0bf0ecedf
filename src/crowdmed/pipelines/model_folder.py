"""Model folders written by the pipelines: the library's model files plus ``data.json``.

A trainable model saves itself with ``model.save(folder)`` (``config.json`` +
``model.safetensors``, see :mod:`crowdmed.training.persistence`). A pipeline adds
``data.json``: what the model's inputs and outputs mean (the task, class values, input kind
and size, rater names ...), which :mod:`crowdmed.pipelines.predict` needs to read new files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crowdmed._io import to_jsonable

__all__ = ["DATA_NAME", "MODEL_FILES", "read_data", "save_model", "write_json"]

#: The pipeline's description of a model folder.
DATA_NAME = "data.json"
#: The files ``model.save`` writes.
MODEL_FILES = ("config.json", "model.safetensors")


def write_json(stage: Callable[[Path], Path], path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``stage(path)``."""
    stage(path).write_text(json.dumps(to_jsonable(value), indent=2) + "\n", encoding="utf-8")


def save_model(model: Any, out: Path, stage: Callable[[Path], Path] = Path) -> list[Path]:
    """Save a model with its own ``save`` and hand its files to ``stage``.

    Args:
        model: A fitted model with ``save(folder)`` (CrowdClassifier, CrowdSegmenter ...).
        out: The model folder.
        stage: Maps each target file to the path actually written; ``Path`` writes in place.

    Returns:
        The target files.
    """
    targets = [out / name for name in MODEL_FILES]
    staged = [stage(t) for t in targets]
    if all(s == t for s, t in zip(staged, targets, strict=True)):
        model.save(out)
        return targets
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=out))
    try:
        model.save(tmp / "model")
        for name, target in zip(MODEL_FILES, staged, strict=True):
            os.replace(tmp / "model" / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return targets


def read_data(model_dir: Path) -> dict[str, Any]:
    """The ``data.json`` of a model folder.

    Raises:
        ValueError: When it is missing or unreadable (one line naming the file).
    """
    path = model_dir / DATA_NAME
    if not model_dir.is_dir():
        what = "is a file" if model_dir.exists() else "does not exist"
        raise ValueError(
            f"MODEL_DIR must be a folder written by `crowdmed train`; '{model_dir}' {what}."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"'{model_dir}' has no {DATA_NAME}; train a model with `crowdmed train`."
        ) from None
    except (OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"Cannot read '{path}': {detail}") from None
    if not isinstance(data, dict) or "task" not in data:
        raise ValueError(f"'{path}' is not a crowdmed model description (no `task`).")
    return data
