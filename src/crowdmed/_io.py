"""Atomic file output: a reader never sees a half-written file, a failure leaves no file."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_path", "atomic_write", "to_jsonable"]


def _umask() -> int:
    """The process umask, read without changing it (Linux), else the common 0o022."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only on success.

    Args:
        path: Final destination. Its folder is created when missing.

    Yields:
        A temporary path in the same folder (so the final ``os.replace`` is atomic).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    # mkstemp creates owner-only files; give the result the usual umask-based mode.
    os.chmod(tmp, 0o666 & ~_umask())
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except (OSError, ValueError) as exc:
        renamed = _name_target(exc, tmp_path, target)
        if renamed is None:
            raise
        raise renamed from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _name_target(exc: Exception, tmp: Path, target: Path) -> Exception | None:
    """The same error naming ``target`` where it named the temporary file (else ``None``)."""
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) == str(tmp):
        return type(exc)(exc.errno, exc.strerror, str(target))
    text = str(exc)
    if str(tmp) in text or tmp.name in text:
        text = text.replace(str(tmp), str(target)).replace(tmp.name, target.name)
        try:
            return type(exc)(text)
        except TypeError:  # an exception type with other arguments
            return ValueError(text)
    return None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing and move it onto ``path`` when the block succeeds.

    Args:
        path: Final destination.
        mode: ``"w"`` or ``"wb"``.
        **kwargs: Passed to :func:`open` (``encoding``, ``newline``).

    Yields:
        The open file object.
    """
    if "r" in mode or "a" in mode:
        raise ValueError(f"`mode` must be a write mode ('w' or 'wb'); got {mode!r}.")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def to_jsonable(value: Any) -> Any:
    """Turn run records into plain JSON values.

    NumPy scalars and arrays become numbers and lists, tables become lists of records, paths
    and enumerations become strings, and NaN, infinities and ``pd.NA`` become ``null`` (so
    ``json.dumps(..., allow_nan=False)`` always succeeds).

    Examples:
        >>> to_jsonable({"a": np.float64("nan"), "b": np.arange(2), "c": Path("x")})
        {'a': None, 'b': [0, 1], 'c': 'x'}
    """
    pd = sys.modules.get("pandas")  # a pandas value exists only once pandas is imported
    if value is None or (pd is not None and value is pd.NA):
        return None
    if pd is not None and isinstance(value, pd.DataFrame):
        frame = value.reset_index() if value.index.name is not None else value
        return [to_jsonable(r) for r in frame.to_dict(orient="records")]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, str):
        return value
    return str(value)
