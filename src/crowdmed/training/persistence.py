"""Model folders: ``config.json`` + ``model.safetensors``, never a pickle.

Every trainable crowdmed model saves itself as one folder:

- ``config.json``: ``task`` (which loader rebuilds it), ``format_version``,
  ``crowdmed_version``, a manifest of the weight tensors (names, shapes, dtypes) and the
  model's own settings (classes, architecture, hyperparameters, fitted attributes);
- ``model.safetensors``: the weights (a safetensors file holds only arrays, so loading a
  folder from someone else cannot run code, unlike :func:`torch.load` on a pickle).

:func:`save_folder` and :func:`read_folder` read and write the format; a model class
registers a loader for its task with :func:`register_loader` and :func:`load_model` opens
any folder::

    model.save("runs/seg")                    # CrowdSegmenter.save -> save_folder(...)
    model = crowdmed.training.load_model("runs/seg")   # -> CrowdSegmenter.load(...)

A changed or corrupt folder gets a one-line :class:`ValueError` that names the file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "dumps_json",
    "load_model",
    "load_state",
    "read_config",
    "read_folder",
    "rebuild_network",
    "register_loader",
    "registered_tasks",
    "save_folder",
]

#: Version of the folder format; a folder with a larger version is refused.
FORMAT_VERSION: int = 1
#: File names inside a model folder.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_RESERVED = ("task", "format_version", "crowdmed_version", "tensors")

_LOADERS: dict[str, Callable[..., Any]] = {}


def _json_default(value: Any) -> Any:
    """JSON for the NumPy, path and enumeration values a config may hold."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value)
    raise TypeError(f"config value of type {type(value).__name__} is not JSON")


def dumps_json(value: Any) -> str:
    """``value`` as indented JSON (NumPy values, paths and enumerations converted)."""
    return json.dumps(value, indent=2, default=_json_default) + "\n"


def _version() -> str:
    from crowdmed import __version__

    return str(__version__)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    # safetensors wants contiguous CPU tensors that share no memory
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(plain, str(path), metadata=metadata)


def save_folder(
    path: str | os.PathLike[str],
    *,
    task: str,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
) -> Path:
    """Write one model folder (``config.json`` and ``model.safetensors``) atomically.

    Both files are written into a temporary folder next to ``path`` first. A new ``path``
    is then created by one rename; into an existing folder the weights are moved first and
    ``config.json`` last (other files in the folder are kept).

    Args:
        path: The model folder (created with its parents when missing).
        task: The loader's name (see :func:`register_loader`), e.g. ``"classifier"``.
        config: JSON-able settings of the model; the keys ``task``, ``format_version``,
            ``crowdmed_version`` and ``tensors`` are reserved.
        tensors: Named weights; any dtype safetensors supports.

    Returns:
        The folder.

    Raises:
        ValueError: A reserved key in ``config`` or a tensor that is not a ``torch.Tensor``.
    """
    if not isinstance(task, str) or not task:
        raise ValueError(f"`task` must be a non-empty string; got {task!r}.")
    clash = [k for k in _RESERVED if k in config]
    if clash:
        raise ValueError(f"`config` must not hold the reserved keys {clash}; rename them.")
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"`tensors` must map names to torch tensors; got other values for {bad}.")
    folder = Path(path)
    manifest = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in tensors.items()}
    full = {
        "task": task,
        "format_version": FORMAT_VERSION,
        "crowdmed_version": _version(),
        **config,
        "tensors": manifest,
    }
    text = dumps_json(full)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _write_tensors(tmp / WEIGHTS_NAME, tensors, {"format": "crowdmed", "task": task})
        (tmp / CONFIG_NAME).write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes an owner-only folder
        if not folder.exists():
            os.replace(tmp, folder)
        else:
            if not folder.is_dir():
                raise ValueError(f"`path` must be a folder; '{folder}' is a file.")
            os.replace(tmp / WEIGHTS_NAME, folder / WEIGHTS_NAME)
            os.replace(tmp / CONFIG_NAME, folder / CONFIG_NAME)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _first_line(exc: BaseException) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return text or type(exc).__name__


def read_config(path: str | os.PathLike[str], *, task: str | None = None) -> dict[str, Any]:
    """The checked ``config.json`` of a model folder (weights not read).

    Args:
        path: The model folder.
        task: The task the folder must hold; any task when ``None``.

    Returns:
        The configuration, including ``task``, ``format_version`` and ``tensors``.

    Raises:
        ValueError: One line naming the file when it is missing or unreadable, not a crowdmed
            model, of another task, or of a newer format.
    """
    folder = Path(path)
    cfg_path = folder / CONFIG_NAME
    if not folder.is_dir():
        if folder.exists():
            raise ValueError(f"A model is a folder; '{folder}' is a file. Pass its folder.")
        raise ValueError(f"Model folder '{folder}' does not exist; check the path.")
    if not cfg_path.is_file():
        raise ValueError(f"'{cfg_path}' is missing; '{folder}' is not a crowdmed model folder.")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"Cannot read '{cfg_path}': {_first_line(exc)}.") from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise ValueError(f"'{cfg_path}' is not a crowdmed model config (no `task`).")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"'{cfg_path}' has no integer `format_version`; got {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"'{cfg_path}' has format_version {version}, newer than {FORMAT_VERSION}; "
            "upgrade crowdmed to load it."
        )
    if task is not None and config["task"] != task:
        raise ValueError(
            f"'{cfg_path}' holds a {config['task']!r} model, not a {task!r} model; "
            "use crowdmed.training.load_model or the matching class."
        )
    if not isinstance(config.get("tensors"), dict):
        raise ValueError(f"'{cfg_path}' has no `tensors` manifest; the file was changed.")
    return config


def read_folder(
    path: str | os.PathLike[str], *, task: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check a model folder written by :func:`save_folder`.

    Args:
        path: The model folder.
        task: The task the folder must hold; any task when ``None``.

    Returns:
        ``(config, tensors)``: the configuration (with ``task``, ``format_version``,
        ``crowdmed_version`` and the ``tensors`` manifest) and the weights on the CPU.

    Raises:
        ValueError: One line naming the file when a file is missing or corrupt (bad JSON,
            unreadable safetensors, tensor names or shapes other than the manifest's), a
            weight is NaN or infinite, the task differs, or the format is newer than this
            crowdmed.
    """
    config = read_config(path, task=task)
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"'{weights}' is missing; save the model again.")
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise ValueError(f"Cannot read '{weights}': {_first_line(exc)}.") from None
    manifest: dict[str, Any] = config["tensors"]
    missing = sorted(set(manifest) - set(tensors))
    extra = sorted(set(tensors) - set(manifest))
    if missing or extra:
        raise ValueError(
            f"'{weights}' does not match its config.json (missing tensors {missing[:5]}, "
            f"unexpected {extra[:5]}); the folder was changed, save the model again."
        )
    wrong = [
        name
        for name, (shape, dtype) in manifest.items()
        if list(tensors[name].shape) != list(shape)
        or str(tensors[name].dtype).removeprefix("torch.") != dtype
    ]
    if wrong:
        raise ValueError(
            f"'{weights}' does not match its config.json (other shapes or dtypes for {wrong[:5]}); "
            "the folder was changed, save the model again."
        )
    # module weights are saved as "<module>/<key>" or "<key.path>"; a top-level fitted
    # attribute (e.g. "head_quiz_accuracy") may hold NaN for "not estimated"
    bad = [
        name
        for name, t in tensors.items()
        if ("/" in name or "." in name or name in ("weight", "bias"))
        and t.is_floating_point()
        and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise ValueError(
            f"'{weights}' holds NaN or infinite weights (in {bad[:3]}); the training diverged, "
            "train again with a lower --lr."
        )
    return config, tensors


def rebuild_network(
    config: dict[str, Any], network: Any, path: str | os.PathLike[str], *, key: str = "network"
) -> Any:
    """The network of a model folder: ``network`` if given, else rebuilt from its spec.

    Args:
        config: The folder's configuration; ``config[key]`` is the
            :func:`crowdmed.nn.network_spec` saved with the model, or ``None``.
        network: A module given by the caller (returned as is), or ``None``.
        path: The model folder (named in the error).
        key: Where the spec is in ``config``.

    Returns:
        The module (weights not loaded yet: see :func:`load_state`).

    Raises:
        ValueError: No ``network`` and no spec (a network built outside
            :func:`crowdmed.nn.build_network`).
    """
    from torch import nn

    if network is not None:
        if not isinstance(network, nn.Module):
            raise TypeError(f"`{key}` must be a torch.nn.Module; got {type(network).__name__}.")
        return network
    spec = config.get(key)
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        cls = config.get(f"{key}_class", "custom")
        raise ValueError(
            f"'{Path(path) / CONFIG_NAME}' holds the weights of a {cls} {key} that crowdmed "
            f"cannot rebuild; pass load(path, {key}=...) with the same architecture (or build "
            "it with crowdmed.nn.build_network before training)."
        )
    from crowdmed.nn.registry import build_network

    try:
        return build_network(spec["name"], dict(spec.get("kwargs") or {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"'{Path(path) / CONFIG_NAME}' has a {key} spec crowdmed cannot build: "
            f"{_first_line(exc)}"
        ) from None


def load_state(
    module: Any, tensors: dict[str, torch.Tensor], prefix: str, path: str | os.PathLike[str]
) -> None:
    """Load the tensors named ``prefix + key`` into ``module`` (all keys must fit exactly).

    Raises:
        ValueError: Missing, unexpected or other-shaped weights (one line naming the file).
    """
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        detail = " ".join(lines) or _first_line(exc)
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise ValueError(
            f"The weights in '{Path(path) / WEIGHTS_NAME}' do not fit the {prefix.rstrip('/')} "
            f"({detail}); pass the network they were trained with."
        ) from None


def register_loader(task: str, loader: Callable[..., Any]) -> None:
    """Make :func:`load_model` open folders of ``task`` with ``loader``.

    Args:
        task: The ``task`` written by :func:`save_folder`.
        loader: Called as ``loader(path, device=device, **kwargs)``; returns the model (for a
            class, its ``load`` classmethod).
    """
    if not callable(loader):
        raise TypeError(f"`loader` must be callable; got {type(loader).__name__}.")
    _LOADERS[task] = loader


def registered_tasks() -> list[str]:
    """Sorted tasks :func:`load_model` can open."""
    return sorted(_LOADERS)


def load_model(
    path: str | os.PathLike[str], *, device: str | torch.device | None = None, **kwargs: Any
) -> Any:
    """Load any crowdmed model folder, ready to predict.

    Args:
        path: A folder written by a model's ``save`` (e.g. :meth:`CrowdClassifier.save`).
        device: Torch device of the loaded model; the CPU when ``None``.
        **kwargs: Passed to the task's loader (e.g. ``network=`` for a network that is not
            in :func:`crowdmed.nn.build_network`'s registry).

    Returns:
        The model, e.g. a fitted :class:`~crowdmed.training.CrowdClassifier`.

    Raises:
        ValueError: The folder is missing, corrupt or holds a task no loader handles.
    """
    import crowdmed.training  # noqa: F401  (its trainers register their loaders)

    config = read_config(path)
    loader = _LOADERS.get(config["task"])
    if loader is None:
        raise ValueError(
            f"'{Path(path) / CONFIG_NAME}' holds task {config['task']!r}, which no loader "
            f"handles; known tasks: {registered_tasks()}."
        )
    try:
        return loader(path, device=device, **kwargs)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # a changed config.json reaches the model's own loader; name the file in every error
        text = str(exc)
        if str(Path(path)) in text and isinstance(exc, ValueError):
            raise
        raise ValueError(
            f"'{Path(path) / CONFIG_NAME}' is not a valid {config['task']} config "
            f"({type(exc).__name__}: {_first_line(exc)}); the folder was changed, save the "
            "model again."
        ) from None
