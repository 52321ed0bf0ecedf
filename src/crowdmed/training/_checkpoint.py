"""Run fingerprints and the error for a checkpoint of another run (see :mod:`.engine`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["CheckpointMismatchError", "data_digest"]


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
