"""Checksums and input records of the files a pipeline reads (for run records and resume).

A run record names every input by path and SHA-256, so a result can be traced to its data and a
checkpoint refuses to continue with other inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["file_record", "files_record", "sha256_file", "tree_sha256"]


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, as hexadecimal text."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(paths: Sequence[Path]) -> str:
    """One SHA-256 over the names and contents of several files, in the given order."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode("utf-8") + b"\0" + sha256_file(p).encode("ascii") + b"\n")
    return digest.hexdigest()


def file_record(path: Path | None) -> dict[str, Any] | None:
    """``{"path", "sha256"}`` of one input file (``None`` for an input not given)."""
    return None if path is None else {"path": path.resolve(), "sha256": sha256_file(path)}


def files_record(folder: Path, files: Sequence[Path]) -> dict[str, Any]:
    """``{"path", "n_files", "sha256"}`` of the files read from a folder."""
    return {"path": folder.resolve(), "n_files": len(files), "sha256": tree_sha256(files)}
