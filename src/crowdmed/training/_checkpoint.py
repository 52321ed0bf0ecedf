"""Run fingerprints and the error for a checkpoint of another run (see :mod:`.engine`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CheckpointEpochsError",
    "CheckpointMismatchError",
    "NonFiniteLossError",
    "data_digest",
]


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


class CheckpointEpochsError(CheckpointMismatchError):
    """A checkpoint holds more finished epochs than the run asks for.

    Attributes:
        epochs_done: Epochs the checkpoint has finished.
        epochs: The run's ``epochs``.
    """

    def __init__(self, path: Path, epochs_done: int, epochs: int, hint: str) -> None:
        super().__init__(
            f"Checkpoint '{path}' holds {epochs_done} finished epochs, more than `epochs` "
            f"({epochs}); pass epochs >= {epochs_done} to continue that run, or {hint}",
            path,
            ["epochs"],
        )
        self.epochs_done, self.epochs = epochs_done, epochs

    def __reduce__(self) -> tuple[type, tuple[Path, int, int, str]]:
        return type(self), (self.path, self.epochs_done, self.epochs, "start over")


class NonFiniteLossError(ValueError):
    """The training loss (or the weights) became NaN or infinite; the fit was stopped.

    The optimiser step of the non-finite loss is not taken, no final model is returned, and
    the checkpoint of the last finished epoch (all finite) is kept.

    Attributes:
        epoch: Epoch (1-based) of the non-finite loss.
        step: Mini-batch (1-based) of that epoch; 0 when the weights were found non-finite
            at the end of the epoch.
        lr: Learning rate of the optimiser's first parameter group at that step.
        value: ``"NaN"`` or ``"inf"``.
        checkpoint: The checkpoint of the last finite epoch, kept, or ``None`` when the run
            has none (set by the engine).
    """

    checkpoint: Path | None = None

    def __init__(
        self, epoch: int, step: int, lr: float, value: str = "NaN", what: str = "loss"
    ) -> None:
        self.epoch, self.step, self.lr, self.value, self.what = epoch, step, lr, value, what
        super().__init__(
            f"The {self.where()}; lower the learning rate `lr` (now {lr:g}) or check the "
            "inputs for extreme values."
        )

    def where(self) -> str:
        """``"loss became NaN at epoch 2 step 3"`` (``"weights became inf after epoch 2"``)."""
        at = f"at epoch {self.epoch} step {self.step}" if self.step else f"after epoch {self.epoch}"
        return f"{self.what} became {self.value} {at}"

    def __reduce__(self) -> tuple[type, tuple[int, int, float, str, str]]:
        return type(self), (self.epoch, self.step, self.lr, self.value, self.what)


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
