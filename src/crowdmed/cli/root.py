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
import time
import warnings
from collections.abc import Callable, Sequence
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

from crowdmed._io import to_jsonable
from crowdmed._validation import check_option
from crowdmed._version import __version__
from crowdmed.aggregation import Method, make_aggregator
from crowdmed.aggregation.base import BaseAggregator
from crowdmed.cli._common import (
    EXIT_USER_ERROR,
    USER_ERRORS,
    _check_outputs,
    _environment,
    _import_torch,
    _one_line,
    _progress,
    _sha256,
    _staged_outputs,
    _State,
    _stderr,
    _step,
    _user_errors,
)
from crowdmed.data.io import read_labels, read_quiz, read_wide, write_table
from crowdmed.data.labels import CrowdLabels, _short
from crowdmed.quality import annotator_table

__all__ = ["EXIT_USER_ERROR", "USER_ERRORS", "app", "main"]

app = typer.Typer(
    name="crowdmed",
    help="Truth inference and annotator reliability from the labels of many annotators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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
            fit_text = f"Fitting {m.value} on {cl.n_labels:,} labels"
            with (
                _step(progress, fit_text),
                warnings.catch_warnings(record=True) as caught,
            ):
                warnings.simplefilter("always")
                fit_start = time.perf_counter()
                max_iter = getattr(agg, "max_iter", 0)
                task = progress.add_task("", total=max_iter or None, visible=bool(max_iter))

                def on_iteration(iteration: int, log_likelihood: float) -> None:
                    progress.update(
                        task,
                        completed=iteration,
                        description=f"  EM iteration {iteration}/{max_iter}, "
                        f"log-likelihood {log_likelihood:,.2f}",
                    )

                agg.fit(cl, gold=cl.gold if use_gold else None, callback=on_iteration)
                progress.remove_task(task)
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
                    "environment": _environment(pandas=pd.__version__),
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                with _staged_outputs() as stage:
                    write_table(consensus_df, stage(out))
                    if annotator_df is not None and annotators is not None:
                        write_table(annotator_df, stage(annotators))
                    record["elapsed_seconds"] = time.perf_counter() - started
                    stage(json_out).write_text(
                        json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8"
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
    parts: Annotated[
        list[str] | None,
        typer.Option(
            "--parts",
            "-p",
            help=(
                "Parts to run, comma-separated or repeated: crowd (truth inference on the "
                "bundled label sets), masks (STAPLE on LIDC nodule masks), mitosis (the AggNet "
                "crowd loop on synthetic fields; needs torch). All when omitted."
            ),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the demo on bundled real data (and the synthetic crowd loop); write a report.

    Example: crowdmed demo --out demo-report --parts crowd,masks
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
        from crowdmed.pipelines.demo import run_demo

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
                parts=_split_names(parts),
            )
    summary = str(getattr(result, "summary", "") or "").rstrip()
    if summary:
        typer.echo(summary)
    report = out / "report.html"
    if "report.html" not in summary:  # the summary usually names the report already
        typer.echo(f"Report: {report}" if report.exists() else f"Results in: {out}")


# ---------------------------------------------------------------------- train / predict
#: Version of the layout of ``model.pt`` (bumped when ``predict`` could no longer read it).
_MODEL_FORMAT = 1

#: Methods ``train`` accepts (``dl-true`` needs the true class of every item instead).
_TRAIN_METHODS = (
    "crowd-layer-mw, crowd-layer-vw, crowd-layer-vb, crowd-layer-vw+b, aggnet (two classes), "
    "dl-em, dl-mv, dl-ds or dl-soft"
)


def _id_key(value: Any) -> str:
    """Item ids are matched across files as strings."""
    return str(value.item() if isinstance(value, np.generic) else value)


def _read_feature_matrix(path: Path, option: str) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"File '{path}' does not exist; check the path (`{option}`).")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"`{option}` must be a NumPy .npy file; cannot read '{path}': {_one_line(exc)}"
        ) from exc
    if hasattr(arr, "files"):  # an .npz archive
        arr.close()
        raise ValueError(
            f"`{option}` must be a .npy file holding one array; '{path}' is an .npz archive. "
            "Save the features with numpy.save."
        )
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"`{option}` must hold numbers; got dtype {arr.dtype} in '{path}'.")
    if arr.ndim != 2:
        raise ValueError(
            f"`{option}` must have shape (n_items, n_features); got shape {arr.shape} in '{path}'."
        )
    x = arr.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise ValueError(
            f"`{option}` has NaN or infinite values in {len(bad)} rows "
            f"({bad[:5].tolist()}, counting from 0); clean or drop them."
        )
    return x


def _read_ids(path: Path, option: str) -> list[str]:
    """Item ids, one per feature row: a CSV/TSV/Parquet with an item column, or one per line."""
    from crowdmed.data.io import _find_column, _read_table, _suffix

    if not path.is_file():
        raise ValueError(f"File '{path}' does not exist; check the path (`{option}`).")
    if _suffix(path) in (".csv", ".tsv", ".tab", ".parquet", ".pq"):
        df = _read_table(path)
        column = df[_find_column(df, "item", None)] if df.shape[1] > 1 else df.iloc[:, 0]
    else:  # plain text, one id per line; parsed like the label file so 7 and "7" agree
        try:
            df = pd.read_csv(path, header=None, sep="\t", dtype=None, skip_blank_lines=True)
        except pd.errors.EmptyDataError as exc:
            raise ValueError(f"`{option}` file '{path}' is empty; list one id per line.") from exc
        if df.shape[1] != 1:
            raise ValueError(
                f"`{option}` file '{path}' must list one item id per line; a line has "
                f"{df.shape[1]} tab-separated fields."
            )
        column = df.iloc[:, 0]
    if column.isna().any():
        rows = (np.flatnonzero(column.isna().to_numpy())[:5] + 1).tolist()
        raise ValueError(f"`{option}` file '{path}' has empty ids (rows {rows}); fill them.")
    ids = [_id_key(v) for v in column]
    dup = pd.Series(ids)[pd.Series(ids).duplicated()].unique()
    if len(dup):
        raise ValueError(
            f"`{option}` file '{path}' repeats ids {_short(list(dup))}; each row needs a unique id."
        )
    return ids


@dataclasses.dataclass
class _FeatureInputs:
    """Network inputs from a feature matrix whose rows are named by item ids."""

    option: str  # option name used in messages
    matrix: np.ndarray
    ids: list[str]
    kind: str = "features"

    def take(self, item_ids: Sequence[Any] | np.ndarray, what: str, **_: Any) -> np.ndarray:
        """The rows of ``item_ids`` in that order; every item must have a row."""
        rows = {k: i for i, k in enumerate(self.ids)}
        keys = [_id_key(i) for i in item_ids]
        missing = [k for k in keys if k not in rows]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(keys)} {what} have no row in `{self.option}`: "
                f"{_short(missing)}. Add their features (ids in the file are e.g. "
                f"{_short(self.ids, 3)})."
            )
        return self.matrix[[rows[k] for k in keys]]


@dataclasses.dataclass
class _ImageInputs:
    """Network inputs from a folder with one image file per item."""

    option: str
    folder: Path
    kind: str = "images"

    def take(
        self,
        item_ids: Sequence[Any] | np.ndarray,
        what: str,
        *,
        size: tuple[int, int] | None = None,
        channels: int = 1,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """The images of ``item_ids`` in that order; every item must have a file."""
        from crowdmed.data.images import load_images

        try:
            return load_images(
                self.folder, item_ids, size=size, channels=channels, progress=progress
            )
        except ValueError as exc:
            raise ValueError(f"{what.capitalize()}: {exc}") from exc


def _feature_inputs(features: Path, feature_ids: Path | None, prefix: str) -> _FeatureInputs:
    if feature_ids is None:
        raise ValueError(
            f"`{prefix}features` needs `{prefix}feature-ids`: the item id of each row, as a "
            "text file with one id per line or a CSV with an 'item' column."
        )
    x = _read_feature_matrix(features, f"{prefix}features")
    ids = _read_ids(feature_ids, f"{prefix}feature-ids")
    if len(ids) != len(x):
        raise ValueError(
            f"`{prefix}feature-ids` lists {len(ids)} ids but `{prefix}features` has {len(x)} "
            "rows; they must match row for row."
        )
    return _FeatureInputs(f"{prefix}features", x, ids)


def _input_source(
    features: Path | None, feature_ids: Path | None, images: Path | None, prefix: str = "--"
) -> _FeatureInputs | _ImageInputs | None:
    """The inputs named by ``--features``/``--feature-ids`` or ``--images`` (or none)."""
    if features is not None and images is not None:
        raise ValueError(
            f"Pass either `{prefix}features` or `{prefix}images`, not both; a network takes "
            "one kind of input."
        )
    if feature_ids is not None and features is None:
        raise ValueError(f"`{prefix}feature-ids` applies to `{prefix}features` only.")
    if features is not None:
        return _feature_inputs(features, feature_ids, prefix)
    if images is not None:
        if not images.is_dir():
            what = "is a file" if images.exists() else "does not exist"
            raise ValueError(f"`{prefix}images` must be a folder of images; '{images}' {what}.")
        return _ImageInputs(f"{prefix}images", images)
    return None


def _required_source(
    features: Path | None, feature_ids: Path | None, images: Path | None, purpose: str
) -> _FeatureInputs | _ImageInputs:
    source = _input_source(features, feature_ids, images)
    if source is None:
        raise ValueError(
            f"Pass the inputs {purpose} with `--features` (and `--feature-ids`) or `--images`."
        )
    return source


def _read_val_labels(path: Path, classes: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """Validation items and their true classes (indices into ``classes``)."""
    from crowdmed.data.io import _find_column, _read_table

    df = _read_table(path)
    if df.empty:
        raise ValueError(f"`--val-labels` file '{path}' has no rows; add one row per item.")
    c_item = _find_column(df, "item", None)
    lower = {str(c).lower(): c for c in df.columns}
    names = ("label", "gold", "truth", "true_label", "class")
    c_label = next((lower[n] for n in names if n in lower), None)
    if c_label is None:
        raise ValueError(
            f"`--val-labels` file '{path}' needs a 'label' column with the true class of each "
            f"item; columns are {list(df.columns)}."
        )
    for col in (c_item, c_label):
        na = df[col].isna()
        if na.any():
            rows = (np.flatnonzero(na.to_numpy())[:5] + 1).tolist()
            raise ValueError(
                f"`--val-labels` column {col!r} has {int(na.sum())} empty values (rows {rows}); "
                "drop those rows."
            )
    dup = df[c_item][df[c_item].duplicated()].unique()
    if len(dup):
        raise ValueError(
            f"`--val-labels` lists items {_short(list(dup))} more than once; give one true "
            "class per item."
        )
    index = {_id_key(c): k for k, c in enumerate(classes)}
    values = [_id_key(v) for v in df[c_label]]
    unknown = sorted({v for v in values if v not in index})
    if unknown:
        raise ValueError(
            f"`--val-labels` has classes {_short(unknown)} that are not among the "
            f"{len(classes)} classes of LABELS {_short(list(classes), 10)}; the network has one "
            "output per class seen in LABELS."
        )
    return df[c_item].tolist(), np.array([index[v] for v in values], dtype=np.int64)


def _tree_sha256(paths: Sequence[Path]) -> str:
    """One checksum over the names and contents of several files."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode("utf-8") + b"\0" + _sha256(p).encode("ascii") + b"\n")
    return digest.hexdigest()


def _input_record(path: Path | None) -> dict[str, Any] | None:
    return None if path is None else {"path": path.resolve(), "sha256": _sha256(path)}


def _images_record(folder: Path, item_ids: Sequence[Any] | np.ndarray) -> dict[str, Any]:
    """Path, file count and one checksum of the images of ``item_ids``."""
    from crowdmed.data.images import image_paths

    files = image_paths(folder, item_ids)
    return {"path": folder.resolve(), "n_files": len(files), "sha256": _tree_sha256(files)}


def _image_size(value: int | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if value < 4:
        raise ValueError(f"`--image-size` must be at least 4 pixels; got {value}.")
    return (value, value)


def _cnn_depth(hw: tuple[int, int]) -> int:
    """Stride-2 blocks of ``small_cnn`` that keep at least 2x2 pixels for batch norm.

    With 1x1 pixels left, batch norm fails on a last mini-batch of one image.
    """
    return max(1, min(4, math.floor(math.log2(min(hw))) - 1))


def _annotators_from_fit(cl: CrowdLabels, confusion: np.ndarray | None) -> pd.DataFrame:
    frame: dict[str, Any] = {
        "annotator": cl.annotator_ids,
        "n_labels": np.bincount(cl.annotators, minlength=cl.n_annotators),
    }
    if confusion is not None:
        diag = np.diagonal(confusion, axis1=1, axis2=2)
        frame["mean_recall"] = diag.mean(axis=1)
        if cl.n_classes == 2:
            frame["sensitivity"] = confusion[:, 1, 1]
            frame["specificity"] = confusion[:, 0, 0]
        for k, value in enumerate(cl.classes):
            frame[f"recall_{value}"] = diag[:, k]
    return pd.DataFrame(frame)


def _check_resume(config_path: Path, settings: dict[str, Any]) -> int | None:
    """Refuse to continue a checkpoint made with other settings or inputs.

    Returns:
        The epoch at which the checkpointed run stopped early, or ``None``.
    """
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        raise ValueError(
            f"The checkpoint in '{config_path.parent}' has no readable config.json; pass "
            "--no-resume to start over."
        )
    wanted = to_jsonable(settings)
    changed = [k for k in wanted if saved.get(k) != wanted[k]]
    if changed:
        shown = ", ".join(f"{k} {saved.get(k)!r} -> {wanted[k]!r}" for k in changed[:3])
        raise ValueError(
            f"The checkpoint in '{config_path.parent}' was made with other settings or inputs "
            f"({shown}); pass --no-resume to start over or use another --out folder."
        )
    stopped = saved.get("stopped_early_at")
    return int(stopped) if isinstance(stopped, int) else None


def _check_model_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` must be a folder for the model; '{out}' is a file.")


@app.command()
def train(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Model folder: model.pt, history.csv, annotators.csv, run.json and checkpoint/.",
            metavar="MODEL_DIR",
            show_default=False,
        ),
    ],
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            "-l",
            help="Long label file (item,annotator,label; CSV/TSV/Parquet). A gold column is "
            "not used; give true classes with --val-labels. Required for --task "
            "classification.",
            show_default=False,
        ),
    ] = None,
    task_kind: Annotated[
        str,
        typer.Option(
            "--task",
            help="classification (crowd labels of items), detection (boxes of several "
            "readers; see --boxes) or segmentation (masks of several raters; see --masks).",
        ),
    ] = "classification",
    boxes: Annotated[
        Path | None,
        typer.Option(
            "--boxes",
            help="Detection: box table of several readers (CSV/TSV image,reader,class,xmin,"
            "ymin,xmax,ymax in pixels) or COCO JSON with a reader per annotation. Needs "
            "--images with one image per box-table image.",
            metavar="READERS.csv|coco.json",
            show_default=False,
        ),
    ] = None,
    variant: Annotated[
        str,
        typer.Option(
            "--variant",
            help="Detection: the boxes learnt from: all-readers (every reader's box), fused "
            "(consensus boxes) or earl (consensus boxes, losses weighted by the readers' "
            "agreement).",
        ),
    ] = "earl",
    iou_thr: Annotated[
        float,
        typer.Option("--iou-thr", help="Detection: IoU at which reader boxes are fused."),
    ] = 0.4,
    masks: Annotated[
        Path | None,
        typer.Option(
            "--masks",
            help="Segmentation: folder with one sub-folder per rater (named after the rater), "
            "each holding that rater's masks named after the case id of the --images image "
            "(PNG/TIFF/NPY/NIfTI label maps: 0 background, 1..K-1 classes; 0/255 is binary). "
            "A rater may skip cases.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    val_masks: Annotated[
        Path | None,
        typer.Option(
            "--val-masks",
            help="Segmentation: reference masks of the --val-images cases, named by case id; "
            "drive early stopping by the validation Dice.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    rater: Annotated[
        str | None,
        typer.Option(
            "--rater",
            help="Segmentation: the rater (a --masks sub-folder) learnt from with --method single.",
            metavar="NAME",
            show_default=False,
        ),
    ] = None,
    unet_channels: Annotated[
        str,
        typer.Option(
            "--unet-channels",
            help="Segmentation: feature channels of the U-Net levels, comma-separated.",
        ),
    ] = "16,32,64",
    backbone: Annotated[
        str | None,
        typer.Option(
            "--backbone",
            help="Segmentation network: unet (MONAI UNet), basic-unet (MONAI BasicUNet; "
            "--unet-channels then takes six numbers), deeplabv3-mobilenet or deeplabv3-resnet50 "
            "(torchvision DeepLabV3, untrained: nothing is downloaded) [default: unet].",
            metavar="NAME",
            show_default=False,
        ),
    ] = None,
    k_every: Annotated[
        int,
        typer.Option(
            "--k-every",
            help="Segmentation, reweight methods: the re-weighting step k grows by one every "
            "this many optimiser steps.",
        ),
    ] = 100,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Detection: start from these detector weights (a model.pt of an earlier run "
            "or a state dict) instead of a random initialisation.",
            metavar="PT",
            show_default=False,
        ),
    ] = None,
    predict_dir: Annotated[
        Path | None,
        typer.Option(
            "--predict",
            help="Detection: after training, find boxes on the images of this folder and "
            "write MODEL_DIR/predictions.csv (image,class,xmin,ymin,xmax,ymax,score). "
            "Segmentation: write MODEL_DIR/predictions/<case>.png label maps and "
            "predictions.csv (foreground fraction per class).",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option(
            "--features",
            help="Features of the items, a .npy array (n_rows, n_features); an MLP is trained. "
            "Needs --feature-ids.",
            metavar="NPY",
            show_default=False,
        ),
    ] = None,
    feature_ids: Annotated[
        Path | None,
        typer.Option(
            "--feature-ids",
            help="The item id of each --features row, in row order: a text file with one id "
            "per line (no header) or a CSV with an 'item' column. Rows are matched to LABELS "
            "by id; rows without labels are ignored.",
            metavar="IDS",
            show_default=False,
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="Folder with one PNG/TIFF/JPEG per item, named <item>.png (or the item id "
            "itself); a small CNN is trained. Images are scaled to [0, 1].",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            "-m",
            help=f"{_TRAIN_METHODS}. Segmentation: single, consensus, gaf, reweight or "
            "reweight-gaf [default: reweight-gaf].",
        ),
    ] = "crowd-layer-mw",
    val_labels: Annotated[
        Path | None,
        typer.Option(
            "--val-labels",
            help="CSV item,label with the true class of validation items; drives early "
            "stopping and the best epoch. Their inputs come from --features/--images unless "
            "--val-features/--val-images is given. Without it, the training loss is watched.",
            metavar="CSV",
            show_default=False,
        ),
    ] = None,
    val_features: Annotated[
        Path | None,
        typer.Option(
            "--val-features",
            help="Features of the validation items (.npy); needs --val-feature-ids.",
            metavar="NPY",
            show_default=False,
        ),
    ] = None,
    val_feature_ids: Annotated[
        Path | None,
        typer.Option(
            "--val-feature-ids",
            help="The item id of each --val-features row.",
            metavar="IDS",
            show_default=False,
        ),
    ] = None,
    val_images: Annotated[
        Path | None,
        typer.Option(
            "--val-images",
            help="Folder with the validation images.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            help="Maximum number of epochs [default: 50; detection 20; segmentation 30].",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help="Mini-batch size [default: 64; detection 16; segmentation 8].",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Learning rate of Adam [default: 1e-3]; of SGD with warm-up for detection "
            "[default: 0.03].",
            show_default=False,
        ),
    ] = None,
    patience: Annotated[
        int,
        typer.Option(
            "--patience",
            help="Stop after this many epochs without a better validation score (training "
            "loss without --val-labels) and keep the best epoch; 0 trains every epoch and "
            "keeps the last.",
        ),
    ] = 10,
    seed: Annotated[
        int,
        typer.Option("--seed", help="Seed of weight initialisation, data order and dropout."),
    ] = 0,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size",
            help="Resize images to this many pixels square; when omitted all images must "
            "have the same size.",
            show_default=False,
        ),
    ] = None,
    channels: Annotated[
        int | None,
        typer.Option(
            "--channels",
            help="Image channels: 1 (grey, the default) or 3 (RGB). Segmentation: 3 when any "
            "image is in colour, else 1, unless given.",
            show_default=False,
        ),
    ] = None,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Make `predict` average over the 8 rotations/mirrors of each image by "
            "default (images only).",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Continue from MODEL_DIR/checkpoint/ when it holds a run with the same "
            "settings and inputs (raise --epochs to train longer); --no-resume starts over.",
        ),
    ] = True,
) -> None:
    """Train a network on the labels of many annotators and save it to a model folder.

    The network is an MLP on --features or a small CNN on --images. Inputs are matched to
    the items of --labels by item id, so the order of rows or files does not matter.
    Validation (early stopping, best epoch) uses the true classes in --val-labels.

    Writes MODEL_DIR/model.pt (weights, classes, ids, settings), history.csv (one row per
    epoch), annotators.csv (estimated per-annotator recall, sensitivity and specificity when
    the method models annotators) and run.json (version, settings, seed, input checksums,
    best epoch, timing). A checkpoint is saved after every epoch in MODEL_DIR/checkpoint/:
    rerunning the same command continues an interrupted run, a larger --epochs trains a
    finished run longer, and a run that stopped early is left as it is.

    With --task detection, an FCOS detector (torchvision) learns from the boxes of several
    readers (--boxes, --images): every reader's boxes, their consensus, or the consensus with
    each box's loss weighted by the readers' agreement (EARL, Le et al. 2023). MODEL_DIR gets
    model.pt, config.json, history.csv, targets.csv, run.json and, with --predict DIR,
    predictions.csv.

    With --task segmentation, a MONAI U-Net learns from the masks of several raters:
    --images DIR holds one 2-D image per case (named <case>.png), --masks DIR one sub-folder
    per rater with that rater's masks of some or all cases (<rater>/<case>.png; label maps,
    0 = background). --method single (one --rater), consensus (majority vote), gaf (vote
    with the Gaussian attention focal loss), reweight or reweight-gaf (the default; learned
    per-pixel rater weights, Xiao et al. 2021). MODEL_DIR gets model.pt, config.json,
    history.csv, raters.csv, run.json and, with --predict DIR, predictions/ and
    predictions.csv.

    Example: crowdmed train --labels labels.csv --images imgs/ --val-labels val.csv
    --out model/ --epochs 30

    Example: crowdmed train --task detection --boxes readers.csv --images imgs/
    --variant earl --out detector/ --predict new_imgs/

    Example: crowdmed train --task segmentation --images imgs/ --masks masks/
    --method reweight-gaf --out unet/ --predict new_imgs/
    """
    started = time.perf_counter()
    console = _stderr()
    with _user_errors(ctx):
        if task_kind not in ("classification", "detection", "segmentation"):
            raise ValueError(
                "`--task` must be 'classification', 'detection' or 'segmentation'; got "
                f"{task_kind!r}."
            )
        if task_kind == "segmentation":
            from crowdmed.cli.train_segment import train_segmentation

            for option, value in (
                ("--labels", labels),
                ("--boxes", boxes),
                ("--features", features),
                ("--feature-ids", feature_ids),
                ("--val-labels", val_labels),
                ("--val-features", val_features),
                ("--val-feature-ids", val_feature_ids),
                ("--checkpoint", checkpoint),
                ("--image-size", image_size),
                ("--tta", tta or None),
            ):
                if value is not None:
                    raise ValueError(f"`{option}` does not apply to --task segmentation.")
            method_source = ctx.get_parameter_source("method")
            default_method = getattr(method_source, "name", None) == "DEFAULT"  # no --method
            train_segmentation(
                ctx,
                images=images,
                masks=masks,
                out=out,
                method="reweight-gaf" if default_method else method,
                rater=rater,
                val_images=val_images,
                val_masks=val_masks,
                epochs=30 if epochs is None else epochs,
                batch_size=8 if batch_size is None else batch_size,
                lr=1e-3 if lr is None else lr,
                seed=seed,
                patience=patience,
                unet_channels=unet_channels,
                backbone="unet" if backbone is None else backbone,
                k_every=k_every,
                channels=channels,
                predict=predict_dir,
                console=console,
                resume=resume,
            )
            return
        seg_options: tuple[tuple[str, object], ...] = (
            ("--masks", masks),
            ("--val-masks", val_masks),
            ("--rater", rater),
            ("--backbone", backbone),
        )
        for option, seg_value in seg_options:
            if seg_value is not None:
                raise ValueError(f"`{option}` applies to --task segmentation only.")
        if task_kind == "detection":
            from crowdmed.cli.train_detect import train_detection

            classification_options: tuple[tuple[str, object], ...] = (
                ("--labels", labels),
                ("--features", features),
                ("--feature-ids", feature_ids),
                ("--val-labels", val_labels),
                ("--val-features", val_features),
                ("--val-feature-ids", val_feature_ids),
                ("--val-images", val_images),
                ("--image-size", image_size),
                ("--tta", tta or None),
            )
            ignored = [o for o, value in classification_options if value is not None]
            if ignored:
                raise ValueError(
                    f"`{ignored[0]}` applies to --task classification only; detection reads "
                    "--boxes and --images."
                )
            train_detection(
                ctx,
                boxes=boxes,
                images=images,
                out=out,
                variant=variant,
                epochs=20 if epochs is None else epochs,
                batch_size=16 if batch_size is None else batch_size,
                lr=0.03 if lr is None else lr,
                seed=seed,
                iou_thr=iou_thr,
                channels=channels,
                checkpoint=checkpoint,
                predict=predict_dir,
                console=console,
            )
            return
        for option, path in (
            ("--boxes", boxes),
            ("--checkpoint", checkpoint),
            ("--predict", predict_dir),
        ):
            if path is not None:
                raise ValueError(f"`{option}` applies to --task detection only.")
        if labels is None:
            raise ValueError(
                "`--labels` is required to train a classifier (--task classification)."
            )
        epochs = 50 if epochs is None else epochs
        batch_size = 64 if batch_size is None else batch_size
        lr = 1e-3 if lr is None else lr
        ctx.params.update(epochs=epochs, batch_size=batch_size, lr=lr)
        torch = _import_torch("train", images=images is not None)
        from crowdmed.nn.models import mlp_head, small_cnn
        from crowdmed.training import CrowdClassifier, TrainMethod

        m = check_option(method, TrainMethod, "--method")
        if m is TrainMethod.DL_TRUE:
            raise ValueError(
                "`--method` dl-true needs the true class of every item, which a crowd label "
                f"file does not give; use one of {_TRAIN_METHODS}."
            )
        for option, value in (("--epochs", epochs), ("--batch-size", batch_size)):
            if value < 1:
                raise ValueError(f"`{option}` must be a positive integer; got {value}.")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"`--lr` must be a positive number; got {lr}.")
        if patience < 0:
            raise ValueError(f"`--patience` must be 0 (off) or a positive integer; got {patience}.")
        source = _required_source(features, feature_ids, images, "of the labelled items")
        is_images = isinstance(source, _ImageInputs)
        if not is_images:
            for option, given in (
                ("--image-size", image_size is not None),
                ("--channels", channels is not None),
                ("--tta", tta),
            ):
                if given:
                    raise ValueError(f"`{option}` applies to --images only.")
        size = _image_size(image_size)
        n_channels = 1 if channels is None else channels
        if n_channels not in (1, 3):
            raise ValueError(f"`--channels` must be 1 (grey) or 3 (RGB); got {n_channels}.")
        if val_labels is None:
            for option, path in (
                ("--val-features", val_features),
                ("--val-feature-ids", val_feature_ids),
                ("--val-images", val_images),
            ):
                if path is not None:
                    raise ValueError(f"`{option}` needs `--val-labels` (the true classes).")
        if (val_features is not None and is_images) or (val_images is not None and not is_images):
            raise ValueError(
                "Validation inputs must be of the kind used for training: --val-features with "
                "--features, --val-images with --images."
            )
        _check_model_dir(out)
        model_path, history_path = out / "model.pt", out / "history.csv"
        annotators_path, run_path = out / "annotators.csv", out / "run.json"
        checkpoint_dir = out / "checkpoint"
        checkpoint_file = checkpoint_dir / "checkpoint.pt"
        config_path = checkpoint_dir / "config.json"
        input_files = [
            p
            for p in (labels, features, feature_ids, val_labels, val_features, val_feature_ids)
            if p is not None
        ]
        _check_outputs(
            input_files,
            {
                "--out model.pt": model_path,
                "--out history.csv": history_path,
                "--out annotators.csv": annotators_path,
                "--out run.json": run_path,
            },
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
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task(f"Reading {escape(labels.name)}", total=None, metrics="")
            cl = read_labels(labels)
            if cl.n_classes < 2:
                raise ValueError(
                    f"`--labels` must hold at least two classes to train a classifier; got "
                    f"only {_short(list(cl.classes))}."
                )

            def on_image(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            progress.update(task, description="Reading inputs")
            x = source.take(
                cl.item_ids, "labelled items", size=size, channels=n_channels, progress=on_image
            )
            if is_images:  # the training size: given, or that of every image
                size = (int(x.shape[2]), int(x.shape[3]))
            x_val = y_val = None
            val_ids: list[Any] = []
            overlap = 0
            val_source = None
            if val_labels is not None:
                val_ids, y_val = _read_val_labels(val_labels, cl.classes)
                val_source = _input_source(val_features, val_feature_ids, val_images, "--val-")
                progress.update(task, description="Reading validation inputs", completed=0)
                x_val = (val_source or source).take(
                    val_ids,
                    "validation items",
                    size=size,
                    channels=n_channels,
                    progress=on_image,
                )
                overlap = len({_id_key(i) for i in val_ids} & {_id_key(i) for i in cl.item_ids})
                if overlap:
                    console.print(
                        f"[yellow]Warning:[/] {overlap} of {len(val_ids)} validation items also "
                        "have crowd labels; the validation score is optimistic."
                    )

            # ---- network, seeded without touching the global torch RNG
            k = cl.n_classes
            build: Callable[..., Any]
            if is_images:
                net_name, build = "small_cnn", small_cnn
                net_kwargs: dict[str, Any] = {
                    "in_channels": n_channels,
                    "n_classes": k,
                    "depth": _cnn_depth((int(x.shape[2]), int(x.shape[3]))),
                }
            else:
                net_name, build = "mlp_head", mlp_head
                net_kwargs = {"in_features": int(x.shape[1]), "n_classes": k}
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                network = build(**net_kwargs)

            # ---- inputs and settings a resumed run must share
            progress.update(task, description="Checking inputs", total=None, completed=0)
            inputs: dict[str, Any] = {
                "labels": _input_record(labels),
                "features": _input_record(features),
                "feature_ids": _input_record(feature_ids),
                "val_labels": _input_record(val_labels),
                "val_features": _input_record(val_features),
                "val_feature_ids": _input_record(val_feature_ids),
            }
            if isinstance(source, _ImageInputs):
                inputs["images"] = _images_record(source.folder, cl.item_ids)
                if val_labels is not None:
                    val_folder = val_source.folder if isinstance(val_source, _ImageInputs) else None
                    inputs["val_images"] = _images_record(val_folder or source.folder, val_ids)
            settings = {
                "method": m.value,
                "seed": seed,
                "lr": lr,
                "batch_size": batch_size,
                "patience": patience,
                "network": net_name,
                "network_kwargs": net_kwargs,
                "image_size": size if is_images else None,
                "inputs": {
                    name: None if rec is None else rec["sha256"] for name, rec in inputs.items()
                },
            }
            resumed = resume and checkpoint_file.exists()
            if resumed:
                stopped = _check_resume(config_path, settings)
                if stopped is not None:
                    if not model_path.is_file():
                        raise ValueError(
                            f"The run in '{out}' stopped early at epoch {stopped} but its "
                            "model.pt is missing; pass --no-resume to train again."
                        )
                    console.print(
                        f"The run in '{out}' already stopped early at epoch {stopped} with "
                        "these settings; nothing to train (pass --no-resume to train again)."
                    )
                    return

            clf = CrowdClassifier(
                network,
                method=m.value,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                patience=patience or None,
                checkpoint_dir=checkpoint_dir,
                random_state=seed,
                tta=tta,
            )
            new_epochs: list[int] = []

            def on_epoch(epoch: int, total: int, record: dict[str, float]) -> None:
                new_epochs.append(epoch)
                shown = " ".join(
                    f"{name}={value:.3f}"
                    for name, value in record.items()
                    if name not in ("epoch", "seconds")
                )
                progress.update(task, completed=epoch, total=total, metrics=shown)

            clf.progress = on_epoch
            progress.update(
                task, description=f"Training {m.value}", total=epochs, completed=0, metrics=""
            )
            made_dirs = [p for p in (checkpoint_dir, out, *out.parents) if not p.exists()]
            if not resume:
                for stale in (checkpoint_file, config_path):
                    stale.unlink(missing_ok=True)
            with contextlib.ExitStack() as cleanup:
                if not resumed:

                    @cleanup.callback
                    def _forget_unused_checkpoint() -> None:
                        # A failure before the first epoch leaves no trace.
                        if not checkpoint_file.exists():
                            config_path.unlink(missing_ok=True)
                            for d in made_dirs:
                                with contextlib.suppress(OSError):
                                    d.rmdir()

                    checkpoint_dir.mkdir(parents=True, exist_ok=True)
                    config_path.write_text(
                        json.dumps(to_jsonable(settings), indent=2) + "\n", encoding="utf-8"
                    )
                fit_start = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    clf.fit(x, cl, X_val=x_val, y_val=y_val, n_classes=k)
                fit_seconds = time.perf_counter() - fit_start
            for w in caught:
                console.print(f"[yellow]Warning:[/] {escape(_one_line(w.message))}", soft_wrap=True)

            # ---- outputs, all or nothing
            progress.update(task, description="Writing outputs", total=None, metrics="")
            history = pd.DataFrame(clf.history_)
            history["epoch"] = history["epoch"].astype(int)
            best = clf.history_[clf.best_epoch_ - 1] if clf.history_ else {}
            confusion = clf.annotator_confusion_
            payload = {
                "format": "crowdmed-model",
                "format_version": _MODEL_FORMAT,
                "crowdmed_version": __version__,
                "method": m.value,
                "network": {"name": net_name, "kwargs": net_kwargs},
                "state_dict": {
                    name: t.detach().cpu() for name, t in clf.network.state_dict().items()
                },
                "input": (
                    {"kind": "images", "channels": n_channels, "size": list(size)}
                    if is_images and size is not None
                    else {"kind": "features", "n_features": int(x.shape[1])}
                ),
                "classes": cl.classes.tolist(),
                "item_ids": cl.item_ids.tolist(),
                "annotator_ids": cl.annotator_ids.tolist(),
                "annotator_confusion": None if confusion is None else torch.as_tensor(confusion),
                "tta": tta,
                "best_epoch": clf.best_epoch_,
            }
            record: dict[str, Any] = {
                "crowdmed_version": __version__,
                "command": "train",
                "arguments": ctx.params,
                "method": m.value,
                "params": {
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "lr": lr,
                    "patience": patience,
                    "image_size": size if is_images else None,
                    "channels": n_channels if is_images else None,
                    "tta": tta,
                    "resume": resume,
                },
                "seed": seed,
                "network": {
                    "name": net_name,
                    "kwargs": net_kwargs,
                    "n_parameters": int(sum(p.numel() for p in clf.network.parameters())),
                },
                "inputs": inputs,
                "data": {
                    "n_items": cl.n_items,
                    "n_annotators": cl.n_annotators,
                    "n_classes": k,
                    "classes": cl.classes,
                    "n_labels": cl.n_labels,
                    "input_shape": list(x.shape[1:]),
                    "n_val": len(val_ids),
                    "n_val_with_crowd_labels": overlap,
                },
                "fit": {
                    "epochs_run": len(clf.history_),
                    "resumed_from_epoch": len(clf.history_) - len(new_epochs) if resumed else None,
                    "best_epoch": clf.best_epoch_,
                    "stopped_early": clf.stopped_early_,
                    "best": best,
                    "seconds": fit_seconds,
                    "warnings": [_one_line(w.message) for w in caught],
                },
                "outputs": {
                    "model": model_path.resolve(),
                    "history": history_path.resolve(),
                    "annotators": annotators_path.resolve(),
                    "run": run_path.resolve(),
                    "checkpoint": checkpoint_file.resolve(),
                },
                "environment": _environment(torch=torch.__version__),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            with _staged_outputs() as stage:
                torch.save(payload, stage(model_path))
                write_table(history, stage(history_path))
                write_table(_annotators_from_fit(cl, confusion), stage(annotators_path))
                record["elapsed_seconds"] = time.perf_counter() - started
                stage(run_path).write_text(
                    json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8"
                )
                # Early stopping is final: a rerun reports it instead of loading the data and
                # network again (the trainer would also train no further).
                settings["stopped_early_at"] = (
                    len(clf.history_) if record["fit"]["stopped_early"] else None
                )
                stage(config_path).write_text(
                    json.dumps(to_jsonable(settings), indent=2) + "\n", encoding="utf-8"
                )

    table = Table(title="crowdmed train", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("method", m.value)
    table.add_row("network", f"{net_name} ({record['network']['n_parameters']:,} parameters)")
    table.add_row("items", f"{cl.n_items:,} ({cl.n_annotators:,} annotators, {k} classes)")
    if val_ids:
        table.add_row("validation items", f"{len(val_ids):,}")
    fit = record["fit"]
    epochs_text = f"{fit['epochs_run']} of {epochs}"
    if fit["resumed_from_epoch"] is not None:
        epochs_text += f" (resumed after epoch {fit['resumed_from_epoch']})"
    table.add_row("epochs", epochs_text)
    table.add_row("best epoch", str(clf.best_epoch_))
    for name in ("val_auc", "val_accuracy", "loss"):
        if name in best:
            table.add_row(f"best {name}", _format_float(best[name]))
    table.add_row("time", f"{record['elapsed_seconds']:.2f} s")
    table.add_row("model", str(out))
    console.print(table)


def _load_model(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild the network saved by ``train`` (weights only; no code is unpickled)."""
    _import_torch("predict")
    from crowdmed.nn.models import mlp_head, small_cnn

    if not model_dir.is_dir():
        what = "is a file" if model_dir.exists() else "does not exist"
        raise ValueError(
            f"MODEL_DIR must be a folder written by `crowdmed train`; '{model_dir}' {what}."
        )
    from crowdmed.training._torch_io import load_payload

    path = model_dir / "model.pt"
    payload = load_payload(path, fmt="crowdmed-model", command="crowdmed train")
    if payload.get("format_version") != _MODEL_FORMAT:
        raise ValueError(
            f"'{path}' has model format {payload.get('format_version')}; this crowdmed "
            f"({__version__}) reads format {_MODEL_FORMAT}. Retrain or use a matching version."
        )
    builders: dict[str, Callable[..., Any]] = {"mlp_head": mlp_head, "small_cnn": small_cnn}
    spec = payload["network"]
    if spec["name"] == "small_cnn":
        _import_torch("predict", images=True)
    network = builders[spec["name"]](**spec["kwargs"])
    network.load_state_dict(payload["state_dict"])
    network.eval()
    return network, payload


@app.command()
def predict(
    ctx: typer.Context,
    model_dir: Annotated[
        Path,
        typer.Argument(
            help="Model folder written by `crowdmed train`.",
            metavar="MODEL_DIR",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Predictions (CSV, TSV or Parquet by suffix): item, label, confidence, "
            "p_<class>... for a classifier; image, class, xmin, ymin, xmax, ymax, score for a "
            "detector. For a segmentation model a folder: <case>.png label maps plus "
            "predictions.csv (case, fraction_<class>...).",
        ),
    ],
    features: Annotated[
        Path | None,
        typer.Option(
            "--features",
            help="Features (.npy, n_rows x n_features) of a model trained on features; one "
            "prediction per row. Needs --feature-ids.",
            metavar="NPY",
            show_default=False,
        ),
    ] = None,
    feature_ids: Annotated[
        Path | None,
        typer.Option(
            "--feature-ids",
            help="The item id of each --features row: a text file with one id per line or a "
            "CSV with an 'item' column.",
            metavar="IDS",
            show_default=False,
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="Folder of images for a model trained on images; one prediction per file "
            "(item = file name without suffix). A classifier resizes them to the training "
            "size; a detector needs that size; a segmentation model takes any size.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    tta: Annotated[
        bool | None,
        typer.Option(
            "--tta/--no-tta",
            help="Average over the 8 rotations/mirrors of each image (images only); the "
            "model's `train --tta` setting when omitted.",
            show_default=False,
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Run record (version, model and input checksums); <out>.json when omitted.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Predict with a model trained by `crowdmed train` (any --task; read from the model).

    A classifier gives class probabilities, a detector boxes, a segmentation model label maps.

    Example: crowdmed predict model/ --images new_imgs/ --out predictions.csv

    Example: crowdmed predict seg_model/ --images new_imgs/ --out masks/
    """
    started = time.perf_counter()
    console = _stderr()
    with _user_errors(ctx):
        try:  # segmentation and detection folders name their task in config.json
            config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            config = {}  # a classifier, or no model at all: told below
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"Cannot read '{model_dir / 'config.json'}': {_one_line(exc)}"
            ) from exc
        task = config.get("task", "classification") if isinstance(config, dict) else None
        if task in ("segmentation", "detection"):
            for option, value in (
                ("--features", features),
                ("--feature-ids", feature_ids),
                ("--tta/--no-tta", tta),
            ):
                if value is not None:
                    raise ValueError(f"`{option}` does not apply to a {task} model.")
            if task == "segmentation":
                from crowdmed.cli.train_segment import predict_segmentation_command as run
            else:
                from crowdmed.cli.train_detect import predict_detection_command as run
            run(
                ctx,
                model_dir=model_dir,
                images=images,
                out=out,
                json_path=json_path,
                console=console,
            )
            return
        if task != "classification":
            raise ValueError(f"'{model_dir}' holds a model of unknown task {task!r}; retrain it.")
        source = _required_source(features, feature_ids, images, "to predict")
        network, payload = _load_model(model_dir)
        torch = _import_torch("predict")
        from crowdmed.training import tta_views

        spec = payload["input"]
        if source.kind != spec["kind"]:
            raise ValueError(
                f"The model in '{model_dir}' was trained on {spec['kind']}; pass "
                f"`--{spec['kind']}` instead of `{source.option}`."
            )
        use_tta = bool(payload.get("tta", False)) if tta is None else tta
        if tta and source.kind != "images":
            raise ValueError("`--tta` applies to --images only.")
        json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
        model_file = model_dir / "model.pt"
        input_files = [p for p in (features, feature_ids, model_file) if p is not None]
        _check_outputs(input_files, {"--out": out, "--json": json_out})

        with _progress(console) as progress:
            if isinstance(source, _FeatureInputs):
                if source.matrix.shape[1] != spec["n_features"]:
                    raise ValueError(
                        f"`--features` has {source.matrix.shape[1]} columns but the model was "
                        f"trained on {spec['n_features']} features."
                    )
                items: list[Any] = source.ids
                x = source.matrix
                inputs = {
                    "features": _input_record(features),
                    "feature_ids": _input_record(feature_ids),
                }
            else:
                from crowdmed.data.images import image_paths, list_images

                items = list_images(source.folder)
                with _step(progress, f"Reading {len(items):,} images"):
                    x = source.take(
                        items, "images", size=tuple(spec["size"]), channels=spec["channels"]
                    )
                inputs = {
                    "images": {
                        "path": source.folder.resolve(),
                        "n_files": len(items),
                        "sha256": _tree_sha256(image_paths(source.folder, items)),
                    }
                }
            with _step(progress, f"Predicting {len(items):,} items"), torch.no_grad():
                chunks = []
                for start in range(0, len(x), 256):
                    xb = torch.from_numpy(x[start : start + 256])
                    if use_tta and xb.ndim == 4:
                        views = [torch.softmax(network(v), 1) for v in tta_views(xb)]
                        chunks.append(torch.stack(views).mean(0))
                    else:
                        chunks.append(torch.softmax(network(xb), 1))
                proba = torch.cat(chunks).double().numpy()

            classes = np.asarray(payload["classes"])
            frame: dict[str, Any] = {
                "item": items,
                "label": classes[proba.argmax(axis=1)],
                "confidence": proba.max(axis=1),
            }
            for k, value in enumerate(classes):
                frame[f"p_{value}"] = proba[:, k]
            record = {
                "crowdmed_version": __version__,
                "command": "predict",
                "arguments": ctx.params,
                "model": {"path": model_file.resolve(), "sha256": _sha256(model_file)},
                "method": payload.get("method"),
                "tta": use_tta,
                "inputs": inputs,
                "n_items": len(items),
                "classes": classes,
                "outputs": {"predictions": out.resolve(), "json": json_out.resolve()},
                "environment": _environment(torch=torch.__version__),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            with _staged_outputs() as stage:
                write_table(pd.DataFrame(frame), stage(out))
                record["elapsed_seconds"] = time.perf_counter() - started
                stage(json_out).write_text(
                    json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8"
                )
    console.print(f"Predicted {len(items):,} items with {payload.get('method')}: {out}")


# The segmentation, detection and mitosis workflows keep their commands in their own modules.
from crowdmed.cli import boxes as _boxes  # noqa: E402
from crowdmed.cli import masks as _masks  # noqa: E402
from crowdmed.cli import mitosis as _mitosis  # noqa: E402

for _module in (_masks, _boxes, _mitosis):
    _module.register(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``crowdmed`` console script and ``python -m crowdmed``."""
    app(args=None if argv is None else list(argv), prog_name="crowdmed")
