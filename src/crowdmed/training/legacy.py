"""Reading the PyTorch files crowdmed writes (weights only: loading runs no code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["load_payload"]


def load_payload(path: Path, *, fmt: str, command: str, what: str = "model") -> dict[str, Any]:
    """Read a ``torch.save`` dictionary tagged ``{"format": fmt, ...}``.

    Args:
        path: The file.
        fmt: The expected value of the payload's ``"format"`` key.
        command: The command that writes such files (named in the errors).
        what: What the file holds, for the errors (``"model"``, ``"detector"``).

    Returns:
        The payload (tensors on the CPU).

    Raises:
        ValueError: The file is missing, unreadable or not of this format (one line each).
    """
    import torch

    if not path.is_file():
        raise ValueError(f"'{path.parent}' has no {path.name}; train a {what} with `{command}`.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise ValueError(f"Cannot read {what} '{path}': {first or type(exc).__name__}") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"'{path}' is not a {what} written by `{command}`.")
    return payload
