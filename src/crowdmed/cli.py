"""Command-line interface: a thin shell over the library (typer + rich).

Each command parses its arguments, calls library functions and writes files atomically.
User errors (a bad value, a missing file or column, a missing optional extra) print one line
``Error: <message>`` on stderr and exit with code 2; ``crowdmed --debug ...`` shows the
traceback instead. Progress displays, warnings and the ``aggregate`` summary go to stderr, so
stdout stays clean; ``demo`` prints its plain-text summary on stdout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from crowdmed._validation import check_option
from crowdmed._version import __version__
from crowdmed.aggregation import Method, make_aggregator
from crowdmed.aggregation.base import BaseAggregator
from crowdmed.data.io import read_labels, read_quiz, read_wide, write_table
from crowdmed.data.labels import CrowdLabels
from crowdmed.quality import annotator_table

__all__ = ["app", "main"]

#: Exceptions reported as a one-line ``Error:`` message (exit code 2) unless ``--debug``.
#: ``OSError`` covers a missing file, a permission problem or a full disk.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, ImportError)

#: Exit code of a user error (the same code click uses for a usage error).
EXIT_USER_ERROR = 2

app = typer.Typer(
    name="crowdmed",
    help="Truth inference and annotator reliability from the labels of many annotators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclasses.dataclass
class _State:
    """Global options, stored on the root context."""

    debug: bool = False


def _stderr() -> Console:
    """A rich console on stderr (created per command so test runners can capture it)."""
    return Console(stderr=True, highlight=False)


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
            raise ValueError(f"`{option}` must not overwrite the input file '{path}'.")
        if path.is_dir():
            raise ValueError(f"`{option}` must be a file path; '{path}' is a directory.")
        seen[r] = option


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths and non-finite floats for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


# ---------------------------------------------------------------------- global options
def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"crowdmed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the full traceback of an error."),
    ] = False,
) -> None:
    """Truth inference and annotator reliability from the labels of many annotators.

    Errors print one line on stderr and exit with code 2; add --debug for the traceback.
    """
    ctx.obj = _State(debug=debug)


# ---------------------------------------------------------------------- aggregate
class InputFormat(str, Enum):
    """Layout of the label file."""

    AUTO = "auto"
    LONG = "long"
    WIDE = "wide"


class OnDuplicate(str, Enum):
    """What to do with repeated (item, annotator) pairs (see ``read_labels``)."""

    ERROR = "error"
    FIRST = "first"
    LAST = "last"
    DROP = "drop"


#: Fitted per-annotator attributes added to the annotator table, and their column names.
#: Model sensitivity/specificity get a prefix because ``annotator_table`` already has
#: ``sensitivity``/``specificity`` columns (from the soft confusion matrices).
_ANNOTATOR_ATTRIBUTES = {
    "sensitivity_": "model_sensitivity",
    "specificity_": "model_specificity",
    "skills_": "skill",
    "weights_": "weight",
    "alphas_": "alpha",
}


def _read_input(
    path: Path,
    fmt: InputFormat,
    *,
    item_col: str | None,
    annotator_col: str | None,
    label_col: str | None,
    gold_col: str | None,
    quiz: Path | None,
    on_duplicate: str,
) -> CrowdLabels:
    if fmt is InputFormat.WIDE:
        for option, value in (("--annotator-col", annotator_col), ("--label-col", label_col)):
            if value is not None:
                raise ValueError(
                    f"`{option}` applies to long files only; a wide file has one column per "
                    "annotator. Drop it or pass --format long."
                )
        if on_duplicate != "error":
            raise ValueError(
                "`--on-duplicate` applies to long files only; a wide file has one cell per "
                "(item, annotator) pair."
            )
        cl = read_wide(path, item=item_col, gold=gold_col or "gold")
        if quiz is not None:
            cl = cl.with_quiz_accuracy(read_quiz(quiz, cl.annotator_ids))
        return cl
    if gold_col is not None and gold_col != "gold":
        raise ValueError(
            "`--gold-col` applies to wide files only; in a long file name the gold column "
            f"'gold' (got {gold_col!r})."
        )
    try:
        return read_labels(
            path,
            item=item_col,
            annotator=annotator_col,
            label=label_col,
            quiz=quiz,
            on_duplicate=on_duplicate,
        )
    except ValueError as exc:
        msg = str(exc)
        if fmt is InputFormat.AUTO and ("column found" in msg or "no recognised header" in msg):
            raise ValueError(
                f"{msg} If this is a wide file (one row per item, one column per annotator), "
                "pass --format wide."
            ) from exc
        raise


def _consensus_frame(cl: CrowdLabels, agg: BaseAggregator) -> pd.DataFrame:
    post = np.asarray(agg.posteriors_, dtype=np.float64)
    frame: dict[str, Any] = {
        "item": cl.item_ids,
        "label": cl.classes[agg.labels_],
        "confidence": post.max(axis=1),
    }
    for k, value in enumerate(cl.classes):
        frame[f"p_{value}"] = post[:, k]
    df = pd.DataFrame(frame)
    if cl.gold is not None:
        known = cl.gold >= 0
        gold = pd.Series(cl.classes[np.maximum(cl.gold, 0)])
        if np.issubdtype(cl.classes.dtype, np.integer):
            gold = gold.astype("Int64")
        df["gold"] = gold.mask(~known)
    return df


def _annotator_frame(cl: CrowdLabels, agg: BaseAggregator) -> pd.DataFrame:
    table = annotator_table(cl, agg.posteriors_)
    for attr, column in _ANNOTATOR_ATTRIBUTES.items():
        value = getattr(agg, attr, None)
        if isinstance(value, np.ndarray) and value.shape == (cl.n_annotators,):
            table[column] = value
    return table.reset_index()


def _format_float(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


@app.command()
def aggregate(
    ctx: typer.Context,
    labels: Annotated[
        Path,
        typer.Argument(
            help="Label file: long CSV/TSV/Parquet (item,annotator,label; task,worker,label; "
            "or headerless worker,task,label,gold), or a wide CSV with --format wide.",
            show_default=False,
            metavar="LABELS",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Consensus table (CSV, TSV or Parquet by suffix): item, label, confidence, "
            "p_<class>..., and gold when known.",
        ),
    ],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            "-m",
            help="majority-vote, wawa, dawid-skene, one-coin, glad or sens-spec.",
        ),
    ] = Method.DAWID_SKENE.value,
    annotators: Annotated[
        Path | None,
        typer.Option(
            "--annotators",
            "-a",
            help="Also write one row of reliability figures per annotator to this file.",
            show_default=False,
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Run record (version, params, seed, input checksum, results); "
            "<out>.json when omitted.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="long, wide or auto. auto reads a long file and suggests --format wide when "
            "no long columns are found.",
        ),
    ] = InputFormat.AUTO.value,
    item_col: Annotated[
        str | None,
        typer.Option("--item-col", help="Item column (detected when omitted).", show_default=False),
    ] = None,
    annotator_col: Annotated[
        str | None,
        typer.Option(
            "--annotator-col",
            help="Annotator column of a long file (detected when omitted).",
            show_default=False,
        ),
    ] = None,
    label_col: Annotated[
        str | None,
        typer.Option(
            "--label-col",
            help="Label column of a long file (detected when omitted).",
            show_default=False,
        ),
    ] = None,
    gold_col: Annotated[
        str | None,
        typer.Option(
            "--gold-col",
            help="Gold column of a wide file ('gold' when omitted); long files use 'gold'.",
            show_default=False,
        ),
    ] = None,
    quiz: Annotated[
        Path | None,
        typer.Option(
            "--quiz",
            help="CSV annotator,quiz_accuracy (used by sens-spec; reported for all methods).",
            show_default=False,
        ),
    ] = None,
    use_gold: Annotated[
        bool,
        typer.Option(
            "--use-gold",
            help="Clamp gold items to their gold label during the fit. By default gold labels "
            "are used only to report accuracy.",
        ),
    ] = False,
    on_duplicate: Annotated[
        str,
        typer.Option(
            "--on-duplicate",
            help="Repeated (item, annotator) pairs: error, first, last, or drop the pair when "
            "its labels conflict.",
        ),
    ] = "error",
    max_iter: Annotated[
        int | None,
        typer.Option(
            "--max-iter",
            help="Maximum EM iterations (EM methods; the method's default when omitted).",
            show_default=False,
        ),
    ] = None,
    tol: Annotated[
        float | None,
        typer.Option(
            "--tol",
            help="EM stops when the log-likelihood gain per label falls below this (the "
            "method's default when omitted).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option("--seed", help="Random state (tie-breaking, random initialisation)."),
    ] = 0,
) -> None:
    """Infer consensus labels and annotator reliability from a label file.

    Example: crowdmed aggregate labels.csv -m dawid-skene -o consensus.csv -a annotators.csv
    """
    started = time.perf_counter()
    console = _stderr()
    with _user_errors(ctx):
        m = check_option(method, Method, "--method")
        input_format = check_option(fmt, InputFormat, "--format")
        duplicates = check_option(on_duplicate, OnDuplicate, "--on-duplicate").value
        agg = make_aggregator(m, random_state=seed)
        params = agg.get_params()
        for option, name, value in (("--max-iter", "max_iter", max_iter), ("--tol", "tol", tol)):
            if value is None:
                continue
            if name not in params:
                raise ValueError(
                    f"`{option}` does not apply to --method {m.value}; it is not fitted by EM."
                )
            agg.set_params(**{name: value})
        json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
        outputs = {"--out": out}
        if annotators is not None:
            outputs["--annotators"] = annotators
        outputs["--json"] = json_out
        _check_outputs([labels] if quiz is None else [labels, quiz], outputs)

        caught: list[warnings.WarningMessage] = []
        with _progress(console) as progress:
            with _step(progress, f"Reading {labels.name}"):
                cl = _read_input(
                    labels,
                    input_format,
                    item_col=item_col,
                    annotator_col=annotator_col,
                    label_col=label_col,
                    gold_col=gold_col,
                    quiz=quiz,
                    on_duplicate=duplicates,
                )
            has_gold = cl.gold is not None and bool((cl.gold >= 0).any())
            if use_gold and not has_gold:
                raise ValueError(
                    "`--use-gold` needs gold labels; the file has no known gold values (add a "
                    "'gold' column, -1 or empty for unknown)."
                )
            if quiz is not None and m is not Method.SENS_SPEC:
                console.print(
                    f"[yellow]Note:[/] --quiz is used by sens-spec only; {m.value} reports it "
                    "in the annotator table."
                )
            with (
                _step(progress, f"Fitting {m.value} on {cl.n_labels:,} labels"),
                warnings.catch_warnings(record=True) as caught,
            ):
                warnings.simplefilter("always")
                fit_start = time.perf_counter()
                agg.fit(cl, gold=cl.gold if use_gold else None)
                fit_seconds = time.perf_counter() - fit_start
            for w in caught:
                console.print(f"[yellow]Warning:[/] {escape(_one_line(w.message))}", soft_wrap=True)

            with _step(progress, "Writing outputs"):
                consensus_df = _consensus_frame(cl, agg)
                annotator_df = _annotator_frame(cl, agg) if annotators is not None else None
                accuracy: float | None = None
                n_gold = int((cl.gold >= 0).sum()) if cl.gold is not None else 0
                if cl.gold is not None and n_gold and not use_gold:
                    known = cl.gold >= 0
                    accuracy = float(np.mean(agg.labels_[known] == cl.gold[known]))
                history = list(getattr(agg, "log_likelihoods_", []) or [])
                record = {
                    "crowdmed_version": __version__,
                    "command": "aggregate",
                    "arguments": ctx.params,
                    "method": m.value,
                    "estimator": type(agg).__name__,
                    "params": agg.get_params(),
                    "seed": seed,
                    "input": {
                        "path": labels.resolve(),
                        "sha256": _sha256(labels),
                        "format": input_format.value,
                        "quiz": None
                        if quiz is None
                        else {"path": quiz.resolve(), "sha256": _sha256(quiz)},
                    },
                    "data": {
                        "n_items": cl.n_items,
                        "n_annotators": cl.n_annotators,
                        "n_classes": cl.n_classes,
                        "n_labels": cl.n_labels,
                        "classes": cl.classes,
                        "n_gold": n_gold,
                    },
                    "fit": {
                        "n_iter": getattr(agg, "n_iter_", None),
                        "converged": getattr(agg, "converged_", None),
                        "log_likelihood": history[-1] if history else None,
                        "used_gold": use_gold,
                        "seconds": fit_seconds,
                        "warnings": [_one_line(w.message) for w in caught],
                    },
                    "evaluation": {"accuracy_vs_gold": accuracy, "n_gold": n_gold},
                    "outputs": {
                        "consensus": out.resolve(),
                        "annotators": None if annotators is None else annotators.resolve(),
                        "json": json_out.resolve(),
                    },
                    "environment": {
                        "python": platform.python_version(),
                        "numpy": np.__version__,
                        "pandas": pd.__version__,
                        "platform": platform.platform(),
                    },
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                with _staged_outputs() as stage:
                    write_table(consensus_df, stage(out))
                    if annotator_df is not None and annotators is not None:
                        write_table(annotator_df, stage(annotators))
                    record["elapsed_seconds"] = time.perf_counter() - started
                    stage(json_out).write_text(
                        json.dumps(_jsonable(record), indent=2) + "\n", encoding="utf-8"
                    )

    _print_summary(console, cl, agg, m, accuracy, n_gold, use_gold, record, outputs)


def _print_summary(
    console: Console,
    cl: CrowdLabels,
    agg: BaseAggregator,
    method: Method,
    accuracy: float | None,
    n_gold: int,
    use_gold: bool,
    record: dict[str, Any],
    outputs: dict[str, Path],
) -> None:
    table = Table(title="crowdmed aggregate", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("method", method.value)
    table.add_row("items", f"{cl.n_items:,}")
    table.add_row("annotators", f"{cl.n_annotators:,}")
    table.add_row("labels", f"{cl.n_labels:,}")
    table.add_row("classes", f"{cl.n_classes}")
    n_iter = getattr(agg, "n_iter_", None)
    table.add_row("iterations", "n/a" if n_iter is None else str(n_iter))
    converged = getattr(agg, "converged_", None)
    table.add_row(
        "converged", "n/a" if converged is None else ("yes" if converged else "[red]no[/]")
    )
    if record["fit"]["log_likelihood"] is not None:
        table.add_row("log-likelihood", _format_float(record["fit"]["log_likelihood"], 2))
    if n_gold:
        if use_gold:
            table.add_row("accuracy vs gold", f"n/a ({n_gold:,} gold items clamped in the fit)")
        else:
            table.add_row("accuracy vs gold", f"{_format_float(accuracy)} ({n_gold:,} items)")
    table.add_row("time", f"{record['elapsed_seconds']:.2f} s")
    for option, path in outputs.items():
        table.add_row(option.lstrip("-"), str(path))
    console.print(table)


# ---------------------------------------------------------------------- demo
def _split_names(values: Sequence[str] | None) -> list[str] | None:
    """Names from a repeatable option whose values may also be comma-separated."""
    if not values:
        return None
    return [n.strip() for value in values for n in value.split(",") if n.strip()]


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for results.json, report.html, report.md and the tables.",
        ),
    ],
    methods: Annotated[
        list[str] | None,
        typer.Option(
            "--methods",
            "-m",
            help="Methods to compare, comma-separated or repeated (all when omitted).",
            show_default=False,
        ),
    ] = None,
    datasets: Annotated[
        list[str] | None,
        typer.Option(
            "--datasets",
            "-d",
            help="Bundled data sets, comma-separated or repeated (all when omitted).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Random state of every method (ties, initialisation).")
    ] = 0,
) -> None:
    """Run every method on the bundled data sets and write a comparison report.

    Example: crowdmed demo --out demo-report --methods majority-vote,dawid-skene
    """
    console = _stderr()
    with _user_errors(ctx):
        method_names = _split_names(methods)
        chosen = (
            None
            if method_names is None
            else [check_option(n, Method, "--methods").value for n in method_names]
        )
        dataset_names = _split_names(datasets)
        if dataset_names is not None:
            from crowdmed.data.datasets import dataset_info

            try:
                dataset_names = [dataset_info(n).name for n in dataset_names]
            except ValueError as exc:
                raise ValueError(str(exc).replace("`name`", "`--datasets`", 1)) from exc
        if out.exists() and not out.is_dir():
            raise ValueError(f"`--out` must be a folder; '{out}' is a file.")
        from crowdmed.demo import run_demo

        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task("Starting the demo", total=None)

            def on_progress(description: str, completed: int, total: int) -> None:
                progress.update(
                    task, description=escape(description), completed=completed, total=total
                )

            result = run_demo(
                out,
                methods=chosen,
                datasets=dataset_names,
                progress=on_progress,
                random_state=seed,
            )
    summary = str(getattr(result, "summary", "") or "").rstrip()
    if summary:
        typer.echo(summary)
    report = out / "report.html"
    if "report.html" not in summary:  # the summary usually names the report already
        typer.echo(f"Report: {report}" if report.exists() else f"Results in: {out}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``crowdmed`` console script and ``python -m crowdmed``."""
    app(args=None if argv is None else list(argv), prog_name="crowdmed")
