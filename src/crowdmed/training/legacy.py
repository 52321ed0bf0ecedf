"""Reading the PyTorch files crowdmed writes (weights only: loading runs no code)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["load_payload", "payload_errors"]


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
        ValueError: The file is missing, unreadable, not of this format or holds NaN or
            infinite weights (one line each).
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
    if not _all_finite(payload, torch):
        raise ValueError(
            f"'{path}' holds NaN or infinite weights; the training diverged, train again "
            f"with `{command}` and a lower --lr."
        )
    return payload


def _all_finite(value: Any, torch: Any) -> bool:
    """Whether every floating tensor in a nested payload is finite."""
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(_all_finite(v, torch) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v, torch) for v in value)
    return True


@contextlib.contextmanager
def payload_errors(path: Path, *, command: str, what: str = "model") -> Iterator[None]:
    """Turn an error while rebuilding a model from a payload into one line naming the file.

    A payload whose network sizes were changed, whose state dict was deleted or whose values
    have other types fails inside the model's own code (``KeyError``, ``RuntimeError`` ...);
    inside this context it raises a :class:`ValueError` that names ``path`` instead.

    Args:
        path: The file the payload was read from.
        command: The command that writes such files (named in the error).
        what: What the file holds (``"model"``, ``"mitosis detector"``).

    Raises:
        ValueError: One line naming ``path``.
    """
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        if isinstance(exc, ValueError) and str(path) in str(exc):
            raise
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        first = first if len(first) <= 160 else first[:157] + "..."
        raise ValueError(
            f"'{path}' is not a valid {what} ({type(exc).__name__}: {first or 'no detail'}); "
            f"the file was changed, train again with `{command}`."
        ) from None
