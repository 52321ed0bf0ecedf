"""Shared pieces of the command-line interface: one-line errors, progress, staged outputs.

Every ``crowdmed`` command module uses these, so a user error looks the same in every command
(``Error: <message>`` on stderr, exit code 2) and no command leaves a partial output file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import platform
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

#: Exceptions reported as a one-line ``Error:`` message (exit code 2) unless ``--debug``.
#: ``OSError`` covers a missing file, a permission problem or a full disk.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, ImportError)

#: Exit code of a user error (the same code click uses for a usage error).
EXIT_USER_ERROR = 2


@dataclasses.dataclass
class _State:
    """Global options, stored on the root context."""

    debug: bool = False


def _stderr() -> Console:
    """A rich console on stderr (created per command so test runners can capture it)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)  # no hard wraps in logs


def _debug(ctx: typer.Context) -> bool:
    obj = ctx.find_root().obj
    return isinstance(obj, _State) and obj.debug


def _one_line(exc: BaseException | str) -> str:
    text = str(exc)
    if not text and isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or (
        type(exc).__name__
    )


@contextlib.contextmanager
def _user_errors(ctx: typer.Context) -> Iterator[None]:
    """Turn a user error into ``Error: <message>`` on stderr and exit code 2."""
    try:
        yield
    except USER_ERRORS as exc:
        if _debug(ctx):
            raise
        typer.echo(f"Error: {_one_line(exc)}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # no spinner frames in logs or captured output
    )


@contextlib.contextmanager
def _step(progress: Progress, description: str) -> Iterator[None]:
    """Show a spinner with the elapsed time while a step runs."""
    task = progress.add_task(escape(description), total=None)
    try:
        yield
    finally:
        progress.remove_task(task)


# ---------------------------------------------------------------------- output files
class _StagedOutputs:
    """Write every output to a temporary file next to it; move them all in place at the end.

    A failure while writing any output removes every temporary file (and the folders created
    for them), so an error never leaves a partial or half-written result.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._made_dirs: list[Path] = []

    def __call__(self, target: Path) -> Path:
        """Return a temporary path for ``target`` that keeps its format suffixes."""
        parent = target.parent
        missing = [p for p in (parent, *parent.parents) if not p.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        self._made_dirs.extend(missing)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp" + "".join(target.suffixes[-2:]), dir=parent
        )
        os.close(fd)
        self._pending.append((Path(tmp), target))
        return Path(tmp)

    def commit(self) -> None:
        # mkstemp creates files readable by the owner only; give them the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        for tmp, target in self._pending:
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, target)
        self._pending.clear()

    def discard(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending.clear()
        for d in self._made_dirs:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()


@contextlib.contextmanager
def _staged_outputs() -> Iterator[_StagedOutputs]:
    stage = _StagedOutputs()
    try:
        yield stage
        stage.commit()
    except BaseException:
        stage.discard()
        raise


def _check_outputs(inputs: Sequence[Path], outputs: dict[str, Path]) -> None:
    """Fail before any work when two outputs collide or would overwrite an input."""
    seen: dict[Path, str] = {}
    resolved_inputs = {p.resolve() for p in inputs}
    for option, path in outputs.items():
        r = path.resolve()
        if r in seen:
            raise ValueError(
                f"`{option}` and `{seen[r]}` must be different files; both are '{path}'."
            )
        if r in resolved_inputs:
            raise ValueError(
                f"`{option}` must not overwrite the input file '{path}'; choose another path."
            )
        if path.is_dir():
            raise ValueError(f"`{option}` must be a file path; '{path}' is a directory.")
        seen[r] = option


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _environment(**versions: str) -> dict[str, str]:
    """Python, NumPy and platform versions for a run record, plus the given ones."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        **versions,
        "platform": platform.platform(),
    }


def _import_torch(command: str, *, images: bool = False) -> Any:
    """Import torch (and MONAI for images) lazily so ``crowdmed --help`` works without them."""
    try:
        import torch

        if images:
            import monai  # noqa: F401  (small_cnn is built from MONAI blocks)
        import crowdmed.nn.models
        import crowdmed.training  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"`crowdmed {command}` needs the torch extra ({_one_line(exc)}): "
            "pip install 'crowdmed[torch]'."
        ) from exc
    return torch
