"""Shared pieces of the command-line interface: errors, progress, staged outputs, run record.

Every ``crowdmed`` command module uses these, so a user error looks the same in every command
(``Error: <message>`` on stderr, exit code 2), no command leaves a partial output file, and
every run record (``run.json`` or ``<out>.json``) is built by :func:`run_record`: command,
arguments, parameters, seed, input checksums, outputs, versions and elapsed time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape

from crowdmed._io import to_jsonable
from crowdmed._version import __version__

#: Exceptions reported as a one-line ``Error:`` message (exit code 2) unless ``--debug``.
#: ``OSError`` covers a missing file, a permission problem or a full disk.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, ImportError)

#: Exit code of a user error (the same code click uses for a usage error).
EXIT_USER_ERROR = 2


@dataclasses.dataclass
class _State:
    """Global options, stored on the root context."""

    debug: bool = False
    started: float = dataclasses.field(default_factory=time.perf_counter)


def _stderr() -> Console:
    """A rich console on stderr (created per command so test runners can capture it)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)  # no hard wraps in logs


def _debug(ctx: typer.Context) -> bool:
    obj = ctx.find_root().obj
    return isinstance(obj, _State) and obj.debug


def _one_line(exc: BaseException | str) -> str:
    where, lr = getattr(exc, "where", None), getattr(exc, "lr", None)
    if callable(where) and isinstance(lr, float):
        # NonFiniteLossError of the training engine, told in the options' words
        kept = getattr(exc, "checkpoint", None)
        if kept is None:
            return f"the {where()}; lower --lr (now {lr:g})."
        return (
            f"the {where()}; lower --lr (now {lr:g}) and add --no-resume (the checkpoint of "
            f"the last finite epoch is kept in '{kept}')."
        )
    done, epochs = getattr(exc, "epochs_done", None), getattr(exc, "epochs", None)
    if isinstance(done, int) and isinstance(epochs, int):
        # CheckpointEpochsError: a checkpoint of a longer run than --epochs asks for
        return (
            f"The checkpoint '{getattr(exc, 'path', '')}' holds {done} finished epochs, more "
            f"than --epochs {epochs}; pass --epochs {done} or more to continue that run, or "
            "--no-resume to start over."
        )
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

    def outputs_named(self, exc: BaseException) -> str | None:
        """The error's message with each temporary path replaced by its output, if any."""
        text = _one_line(exc)
        renamed = text
        for tmp, target in self._pending:
            renamed = renamed.replace(str(tmp), str(target)).replace(tmp.name, target.name)
        return renamed if renamed != text else None

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
    except BaseException as exc:
        renamed = stage.outputs_named(exc) if isinstance(exc, USER_ERRORS) else None
        stage.discard()
        if renamed is not None:  # name the output the user gave, not its temporary file
            raise ValueError(renamed) from None
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


#: Suffixes of the tables the commands write (``.gz`` may follow the CSV and TSV ones).
TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq")


def _check_table_outputs(outputs: dict[str, Path | None]) -> None:
    """Fail before any work when a table output's name does not say CSV, TSV or Parquet.

    A CSV written under another suffix (``consensus.xlsx``, ``out.json``) would mislead every
    program that opens it by its name.
    """
    from crowdmed._tables import table_suffix

    for option, path in outputs.items():
        if path is None:
            continue
        suffix = table_suffix(path)
        parquet_gz = suffix in (".parquet", ".pq") and path.suffix.lower() == ".gz"
        if suffix not in TABLE_SUFFIXES or parquet_gz:
            raise ValueError(
                f"`{option}` '{path}' must be named as a .csv, .tsv or .parquet table (got "
                f"{''.join(path.suffixes) or 'no suffix'!r}); name it e.g. "
                f"'{path.name.split('.')[0] or 'table'}.csv'."
            )


def _environment(**versions: str) -> dict[str, str]:
    """Python, NumPy and platform versions for a run record, plus the given ones."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        **versions,
        "platform": platform.platform(),
    }


def _format_float(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


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


@contextlib.contextmanager
def _reporter(console: Console, description: str) -> Iterator[Callable[..., None]]:
    """A progress bar for a library call; yields its ``progress(**fields)`` callback.

    The callback takes the keywords of ``rich.progress.Progress.update``: ``description``,
    ``completed``, ``total`` and ``metrics`` (text shown after the bar). Without a terminal
    nothing is shown (no spinner frames in logs or captured output): the callback does
    nothing and rich's progress display is not imported.
    """
    if not console.is_terminal:

        def ignore(**fields: Any) -> None:
            del fields

        yield ignore
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[metrics]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(escape(description), total=None, metrics="")

        def report(**fields: Any) -> None:
            if "description" in fields:
                fields["description"] = escape(str(fields["description"]))
            progress.update(task, **fields)

        yield report


def _command_name(ctx: typer.Context) -> str:
    """The command as typed after ``crowdmed`` (``"train classify"``, ``"aggregate"``)."""
    parts = ctx.command_path.split()
    return " ".join(parts[1:]) if len(parts) > 1 else ctx.command_path


def run_record(
    ctx: typer.Context,
    *,
    seed: int | None = None,
    params: dict[str, Any] | None = None,
    inputs: dict[str, Any] | list[Any] | None = None,
    outputs: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """The run record (``run.json`` or ``<out>.json``) of a command; the one builder for all.

    Args:
        ctx: The command's context: its name and its arguments are recorded.
        seed: The random seed, when the command has one.
        params: The settings of the method.
        inputs: Path and SHA-256 of every input.
        outputs: Path of every output.
        versions: Versions of libraries besides Python, NumPy and crowdmed (e.g. torch).
        **sections: Further sections, in order (``method``, ``data``, ``fit`` ...).

    Returns:
        The record; :func:`write_run_record` adds ``elapsed_seconds`` and writes it.
    """
    record: dict[str, Any] = {
        "crowdmed_version": __version__,
        "command": _command_name(ctx),
        "arguments": dict(ctx.params),
    }
    if seed is not None:
        record["seed"] = seed
    if params is not None:
        record["params"] = params
    record.update(sections)
    if inputs is not None:
        record["inputs"] = inputs
    if outputs is not None:
        record["outputs"] = outputs
    record["environment"] = _environment(**(versions or {}))
    record["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def run_params(ctx: typer.Context) -> dict[str, Any]:
    """The command's settings: its arguments that are not file or folder paths."""
    return {k: v for k, v in ctx.params.items() if not isinstance(v, Path)}


def save_model_folder(ctx: typer.Context, run: Any, out: Path, **sections: Any) -> dict[str, Any]:
    """Save a trained run to its model folder with ``run.json``, all files at once.

    Args:
        ctx: The command's context.
        run: A pipeline result with ``save(out, stage)`` returning the files it wrote.
        out: The model folder.
        **sections: Sections of the run record (see :func:`run_record`).

    Returns:
        The run record.
    """
    run_json = out / "run.json"
    with _staged_outputs() as stage:
        saved = run.save(out, stage)
        outputs = {p.name: p.resolve() for p in [*saved, run_json]}
        record = run_record(ctx, outputs=outputs, versions=_torch_version(), **sections)
        write_run_record(ctx, run_json, record, stage)
    return record


def write_run_record(
    ctx: typer.Context, path: Path, record: dict[str, Any], stage: Callable[[Path], Path] = Path
) -> None:
    """Add ``elapsed_seconds`` (since the command started) and write the record as JSON."""
    obj = ctx.find_root().obj
    started = obj.started if isinstance(obj, _State) else time.perf_counter()
    record["elapsed_seconds"] = time.perf_counter() - started
    stage(path).write_text(json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8")


def _torch_version() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__}
