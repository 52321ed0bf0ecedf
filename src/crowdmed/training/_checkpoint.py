"""Checkpoint files shared by the fit loops: fingerprints, atomic saving, checked loading."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crowdmed._io import atomic_path

__all__ = ["CheckpointMismatchError", "data_digest", "load_checkpoint", "save_checkpoint"]


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a run with other settings or data.

    Attributes:
        path: The checkpoint file.
        changed: Sorted names of the settings that differ.
    """

    def __init__(self, message: str, path: Path, changed: list[str]) -> None:
        super().__init__(message)
        self.path = path
        self.changed = changed


def data_digest(*arrays: torch.Tensor | np.ndarray | None) -> str:
    """First 16 hex digits of the SHA-256 of the arrays' bytes (``None`` adds a marker)."""
    h = hashlib.sha256()
    for arr in arrays:
        if arr is None:
            h.update(b"\x00none")
            continue
        values = arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else arr
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()[:16]


def load_checkpoint(
    path: Path | None, config: dict[str, Any], device: torch.device, *, fix: str
) -> dict[str, Any] | None:
    """The state saved in ``path``, or ``None`` when there is none.

    Args:
        path: Checkpoint file, or ``None`` for no checkpointing.
        config: Settings that must equal those saved with the checkpoint.
        device: Where to map the saved tensors.
        fix: End of the error message: how to start over.

    Raises:
        CheckpointMismatchError: The checkpoint belongs to a run with another ``config``.
    """
    if path is None or not path.exists():
        return None
    state: dict[str, Any] = torch.load(path, map_location=device, weights_only=False)
    old = state.get("config", {})
    changed = sorted(key for key in config if old.get(key) != config[key])
    if changed:
        raise CheckpointMismatchError(
            f"Checkpoint {str(path)!r} belongs to another run (changed: {changed}); {fix}",
            path,
            changed,
        )
    return state


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` with :func:`torch.save` atomically (the folder is created if needed)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
