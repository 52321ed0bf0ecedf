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

__all__ = ["DATA_NAME", "MODEL_FILES", "check_data", "read_data", "save_model", "write_json"]

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_data(
    model_dir: Path,
    data: dict[str, Any],
    *,
    task: str,
    n_classes: int | None = None,
) -> None:
    """Check that ``data.json`` describes the model of its folder before it is used.

    Args:
        model_dir: The model folder.
        data: Its ``data.json`` (from :func:`read_data`).
        task: ``"classification"``, ``"segmentation"`` or ``"detection"``.
        n_classes: Number of classes of the loaded model's output, when known.

    Raises:
        ValueError: One line naming ``data.json`` when a field the task needs is missing or
            of the wrong type, or its classes do not match the model's output.
    """
    path = model_dir / DATA_NAME

    def bad(what: str) -> ValueError:
        return ValueError(f"'{path}' {what}; the folder was changed, train the model again.")

    if data.get("task") != task:
        raise ValueError(f"'{model_dir}' holds a {data.get('task')} model, not a {task} model.")
    if task == "classification":
        spec = data.get("input")
        if not isinstance(spec, dict) or spec.get("kind") not in ("features", "images"):
            raise bad("has no `input` of kind 'features' or 'images'")
        if spec["kind"] == "features" and not _is_int(spec.get("n_features")):
            raise bad("has no integer `input.n_features`")
        if spec["kind"] == "images":
            size, channels = spec.get("size"), spec.get("channels")
            if not (isinstance(size, list) and size and all(_is_int(v) and v > 0 for v in size)):
                raise bad("has no `input.size` (a list of positive integers)")
            if channels not in (1, 3):
                raise bad(f"has `input.channels` {channels!r} (must be 1 or 3)")
    if task in ("classification", "detection"):
        classes = data.get("classes")
        if not isinstance(classes, list) or not classes:
            raise bad("has no `classes` list")
        if len({str(c) for c in classes}) != len(classes):
            raise bad("lists a class twice in `classes`")
        given = len(classes)
    else:
        value = data.get("n_classes")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"has `n_classes` {value!r} (must be a positive integer)")
        given = value
    if task in ("segmentation", "detection") and data.get("channels") not in (1, 3):
        raise bad(f"has `channels` {data.get('channels')!r} (must be 1 or 3)")
    if task == "detection":
        size = data.get("image_size")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            raise bad("has no `image_size` [height, width]")
    if n_classes is not None and given != n_classes:
        raise bad(f"lists {given} classes but '{model_dir / MODEL_FILES[1]}' predicts {n_classes}")


def fit_device(device: str) -> tuple[str | None, str]:
    """A command's ``--device`` as the trainer's argument and as the device it resolves to.

    ``"auto"`` is ``None`` for the trainer (a CUDA GPU when one is available, else the CPU);
    the second value (``"cpu"``, ``"cuda:0"`` ...) is the one the run record keeps.
    """
    from crowdmed.training.engine import resolve_device

    arg = None if device == "auto" else device
    dev = resolve_device(arg)
    if dev.type == "cuda" and dev.index is None:
        import torch

        dev = torch.device("cuda", torch.cuda.current_device())
    return arg, str(dev)
