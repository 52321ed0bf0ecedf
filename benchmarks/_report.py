"""Shared helpers for the benchmark scripts: BENCHMARKS.md sections, JSON results, machine line.

Each benchmark owns one section of ``BENCHMARKS.md`` at the repository root, delimited by
``<!-- BEGIN {name} -->`` and ``<!-- END {name} -->``. :func:`update_section` replaces that
block (or appends it) and leaves every other byte of the file alone, so scripts can run in any
order and re-run without touching each other's results. Writes are atomic (temporary file in the
same folder + ``os.replace``) and serialised with a lock, so two scripts finishing at the same
time do not lose each other's section.

Usage from a script in ``benchmarks/``::

    from _report import machine_line, update_section, write_json

    update_section("my_benchmark", markdown)
    write_json("benchmarks/results/my_benchmark.json", raw)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["REPO", "atomic_write_text", "machine_line", "update_section", "write_json"]

REPO = Path(__file__).resolve().parents[1]
TITLE = "# Benchmarks\n"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def _resolve(path: str | os.PathLike[str]) -> Path:
    """Relative paths are taken from the repository root, not the working directory."""
    p = Path(path)
    return p if p.is_absolute() else REPO / p


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Serialise read-modify-write cycles on ``target`` between processes (POSIX only).

    The lock file lives in the temp folder (keyed by the target's absolute path) so nothing
    extra appears in the work tree.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no lock, the write itself stays atomic
        yield
        return
    key = hashlib.sha1(str(target.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"crowdmed-bench-{key}.lock"
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file; on failure the old file is left as it was.
    Relative paths are taken from the repository root. Returns the absolute path.
    """
    target = _resolve(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates owner-only files; keep the mode of the file we replace (or 0o644).
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (atomically; NaN becomes ``null``). Returns the path."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def _jsonable(obj: Any) -> Any:
    """NumPy scalars/arrays to Python, non-finite floats to ``None``, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    return obj


def _markers(name: str) -> tuple[str, str]:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"`name` must be letters, digits, '_', '-' or '.'; got {name!r}. It is used inside an "
            "HTML comment marker."
        )
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


def update_section(
    name: str, markdown: str, path: str | os.PathLike[str] = "BENCHMARKS.md"
) -> Path:
    """Replace (or append) the block of section ``name`` in ``path`` with ``markdown``.

    The block runs from the line ``<!-- BEGIN {name} -->`` to the line ``<!-- END {name} -->``
    (both kept). A missing file is created with a ``# Benchmarks`` title; a missing section is
    appended at the end. The rest of the file is left byte for byte.

    Args:
        name: Section name (letters, digits, ``_``, ``-``, ``.``).
        markdown: Body of the section; markers are added here, so it must not contain them.
        path: Target file; relative paths are taken from the repository root.

    Returns:
        The absolute path written.

    Raises:
        ValueError: For a bad name, a body containing the markers, or a file whose markers for
            ``name`` are unpaired, out of order or duplicated (fix the file by hand).
    """
    begin, end = _markers(name)
    if begin in markdown or end in markdown:
        raise ValueError(f"`markdown` must not contain the markers of section {name!r}.")
    target = _resolve(path)
    block = f"{begin}\n{markdown.strip()}\n{end}"
    with _locked(target):
        old = target.read_text(encoding="utf-8") if target.exists() else TITLE
        n_begin, n_end = old.count(begin), old.count(end)
        if n_begin == 0 and n_end == 0:
            new = old.rstrip("\n") + "\n\n" + block + "\n"
        elif n_begin == 1 and n_end == 1 and old.index(begin) < old.index(end):
            start = old.index(begin)
            stop = old.index(end) + len(end)
            new = old[:start] + block + old[stop:]
        else:
            raise ValueError(
                f"{str(target)!r} has {n_begin} '{begin}' and {n_end} '{end}' markers (or END "
                "before BEGIN); expected one pair or none. Fix the file by hand."
            )
        return atomic_write_text(target, new)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One line describing where the numbers were measured.

    Cores available to this process, CPU model, Python, NumPy and torch versions (torch is
    read from the installed metadata, not imported), and today's date.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 0
    parts = [
        f"{cores} cores ({_cpu_model()})",
        f"Python {platform.python_version()}",
        f"NumPy {_version('numpy') or 'n/a'}",
    ]
    torch_version = _version("torch")
    if torch_version:
        parts.append(f"torch {torch_version}")
    parts.append(f"{sys.platform}, {_dt.date.today().isoformat()}")
    return "Machine: " + ", ".join(parts)
