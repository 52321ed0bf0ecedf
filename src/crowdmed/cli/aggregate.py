"""``crowdmed aggregate`` (truth inference on a label file) and ``crowdmed demo``.

Thin shells over :func:`crowdmed.pipelines.aggregate.aggregate_file` and
:func:`crowdmed.pipelines.demo.run_demo`.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crowdmed._validation import check_option
from crowdmed.aggregation import CONTINUOUS_METHODS, ORDINAL_METHODS, Method
from crowdmed.cli._common import (
    _check_outputs,
    _check_table_outputs,
    _format_float,
    _reporter,
    _staged_outputs,
    _stderr,
    _user_errors,
    run_record,
    write_run_record,
)
from crowdmed.cli._options import (
    MAX_SEED,
    AnnotatorColOpt,
    ItemColOpt,
    JsonOpt,
    LabelColOpt,
    OnDuplicateOpt,
    number_option,
)
from crowdmed.data.io import write_table
from crowdmed.pipelines.records import file_record, files_record

__all__ = ["aggregate", "demo"]

LabelsArg = Annotated[
    Path,
    typer.Argument(
        help="Label file: long CSV/TSV/Parquet (item,annotator,label; task,worker,label; or "
        "headerless worker,task,label,gold), or a wide CSV with --format wide.",
        show_default=False,
        metavar="LABELS",
    ),
]
ConsensusOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Consensus table (CSV, TSV or Parquet by suffix): item, label, confidence, "
        "p_<class>..., and gold when known (continuous labels: item, value, sd, n_labels, "
        "gold).",
    ),
]


def _method_help() -> str:
    nominal = ", ".join(m.value for m in Method)
    ordinal = ", ".join(m.value for m in ORDINAL_METHODS)
    continuous = ", ".join(m.value for m in CONTINUOUS_METHODS)
    return (
        f"Nominal labels: {nominal}, or auto (the one that best predicts held-out labels, "
        f"chosen by cross-validation over annotations). Ordinal labels: {ordinal}. "
        f"Continuous labels: {continuous}. Default: dawid-skene, graded-response or raykar "
        "by --label-type."
    )


MethodOpt = Annotated[
    str | None,
    typer.Option("--method", "-m", help=_method_help(), show_default=False),
]
LabelTypeOpt = Annotated[
    str,
    typer.Option(
        "--label-type",
        "-t",
        help="nominal (classes without order), ordinal (grades in the order of --classes) or "
        "continuous (numbers: the consensus is a value per item).",
    ),
]
ClassesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--classes",
        help="Every class value in order, comma-separated or repeated (e.g. 1,2,3,4,5 or "
        "low,mid,high): the grade order of ordinal labels. The sorted labels when omitted.",
        show_default=False,
    ),
]
AnnotatorsOpt = Annotated[
    Path | None,
    typer.Option(
        "--annotators",
        "-a",
        help="Also write one row of reliability figures per annotator to this file.",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="long, wide or auto. auto reads a long file and suggests --format wide when no "
        "long columns are found.",
    ),
]


def _column(name: str, help_text: str, *short: str) -> Any:
    return typer.Option(name, *short, help=help_text, show_default=False)


GoldColOpt = Annotated[
    str | None,
    _column(
        "--gold-col", "Gold column of a wide file ('gold' when omitted); long files use 'gold'."
    ),
]
QuizOpt = Annotated[
    Path | None,
    _column("--quiz", "CSV annotator,quiz_accuracy (used by sens-spec; reported for all methods)."),
]
UseGoldOpt = Annotated[
    bool,
    typer.Option(
        "--use-gold",
        help="Use the gold labels in the fit: gold items are clamped to their gold label "
        "(gold-majority-vote, which needs it, learns each annotator's weight from them). By "
        "default gold labels are used only to report accuracy.",
    ),
]
MaxIterOpt = Annotated[
    int | None,
    number_option(
        "--max-iter",
        help="Maximum EM iterations (EM methods; the method's default when omitted).",
        lo=0,
        hi=1_000_000,
        integer=True,
        show_default=False,
    ),
]
TolOpt = Annotated[
    float | None,
    number_option(
        "--tol",
        help="EM stops when the log-likelihood gain per label falls below this (the method's "
        "default when omitted).",
        lo=0,
        hi=1,
        show_default=False,
    ),
]
AggregateSeedOpt = Annotated[
    int,
    number_option(
        "--seed",
        help="Random state (tie-breaking, random initialisation).",
        lo=0,
        hi=MAX_SEED,
        integer=True,
    ),
]
SchedulerOpt = Annotated[
    str | None,
    _column(
        "--scheduler",
        "Fit LABELS, a Parquet file or folder, on Dask by map-reduce EM: 'local' starts a "
        "cluster on this machine, an address (tcp://host:8786) uses a running one. Methods "
        "majority-vote, dawid-skene and one-coin; needs the dask extra.",
    ),
]


@contextlib.contextmanager
def _em_progress(console: Console, description: str) -> Iterator[Any]:
    """A progress display with one line per EM iteration; yields the fit callback."""
    with _reporter(console, description) as report:

        def on_iteration(iteration: int, log_likelihood: float) -> None:
            report(
                completed=iteration,
                description=f"{description}: EM iteration {iteration}, "
                f"log-likelihood {log_likelihood:,.2f}",
            )

        yield on_iteration


def aggregate(
    ctx: typer.Context,
    labels: LabelsArg,
    out: ConsensusOpt,
    method: MethodOpt = None,
    label_type: LabelTypeOpt = "nominal",
    classes: ClassesOpt = None,
    annotators: AnnotatorsOpt = None,
    json_path: JsonOpt = None,
    fmt: FormatOpt = "auto",
    item_col: ItemColOpt = None,
    annotator_col: AnnotatorColOpt = None,
    label_col: LabelColOpt = None,
    gold_col: GoldColOpt = None,
    quiz: QuizOpt = None,
    use_gold: UseGoldOpt = False,
    on_duplicate: OnDuplicateOpt = "error",
    max_iter: MaxIterOpt = None,
    tol: TolOpt = None,
    seed: AggregateSeedOpt = 0,
    scheduler: SchedulerOpt = None,
) -> None:
    """Infer consensus labels and annotator reliability from a label file.

    Example: crowdmed aggregate labels.csv -m dawid-skene -o consensus.csv
    -a annotators.csv

    Ordinal grades: crowdmed aggregate ratings.csv -t ordinal --classes 1,2,3,4,5
    -o consensus.csv
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed._tables import parse_class_list
        from crowdmed.pipelines.aggregate import (
            InputFormat,
            aggregate_file,
            make_method,
            resolve_method,
        )

        kind, method = resolve_method(method, label_type)
        input_format = check_option(fmt, InputFormat, "--format")
        make_method(method, seed=seed, max_iter=max_iter, tol=tol, label_type=kind.value)
        class_list = parse_class_list(classes)
        json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
        outputs = {"--out": out, "--annotators": annotators, "--json": json_out}
        outputs = {option: path for option, path in outputs.items() if path is not None}
        _check_outputs([labels] if quiz is None else [labels, quiz], outputs)
        _check_table_outputs({"--out": out, "--annotators": annotators})
        if scheduler is not None:
            _aggregate_on_dask(
                ctx,
                console,
                labels,
                out,
                annotators,
                json_out,
                outputs,
                method=method,
                scheduler=scheduler,
                seed=seed,
                max_iter=max_iter,
                tol=tol,
                columns=(item_col, annotator_col, label_col),
                refused=_refused_on_dask(
                    kind, class_list, fmt, gold_col, quiz, use_gold, on_duplicate
                ),
            )
            return
        read = dict(
            fmt=fmt,
            item_col=item_col,
            annotator_col=annotator_col,
            label_col=label_col,
            gold_col=gold_col,
            quiz=quiz,
            on_duplicate=on_duplicate,
            classes=class_list,
        )
        with _em_progress(console, f"Fitting {method} on {labels.name}") as on_iteration:
            result = aggregate_file(
                labels,
                method,
                seed=seed,
                max_iter=max_iter,
                tol=tol,
                use_gold=use_gold,
                read=read,
                callback=on_iteration,
                label_type=kind.value,
            )
        _print_notes(console, result, method, quiz)
        record = _record(ctx, result, labels, quiz, input_format.value, out, annotators, json_out)
        _write_outputs(ctx, result, record, out, annotators, json_out)
    _print_summary(console, result, use_gold, record, outputs)


def _refused_on_dask(
    kind: Any,
    class_list: list[str] | None,
    fmt: str,
    gold_col: str | None,
    quiz: Path | None,
    use_gold: bool,
    on_duplicate: str,
) -> list[str]:
    """The options given that a fit on Dask does not support (named as typed)."""
    options = {
        f"--label-type {kind.value}": kind.value != "nominal",
        "--classes": class_list is not None,
        "--format wide": fmt == "wide",
        "--gold-col": gold_col is not None,
        "--quiz": quiz is not None,
        "--use-gold": use_gold,
        "--on-duplicate": on_duplicate != "error",
    }
    return [option for option, given in options.items() if given]


def _write_outputs(
    ctx: typer.Context,
    result: Any,
    record: dict[str, Any],
    out: Path,
    annotators: Path | None,
    json_out: Path,
) -> None:
    """Write the consensus, the annotator table and the run record together (all or none)."""
    from crowdmed.pipelines.aggregate import write_consensus

    with _staged_outputs() as stage:
        write_consensus(result.consensus_columns(), stage(out), like=out)
        if annotators is not None:
            write_table(result.annotators(), stage(annotators))
        write_run_record(ctx, json_out, record, stage)


def _print_notes(console: Console, result: Any, method: str, quiz: Path | None) -> None:
    """Print the note on --quiz and the fit's warnings to stderr."""
    if quiz is not None and method != Method.SENS_SPEC.value:
        console.print(
            f"[yellow]Note:[/] --quiz is used by sens-spec only; {method} reports it in "
            "the annotator table."
        )
    for warning in result.fit["warnings"]:
        console.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True)


def _record(
    ctx: typer.Context,
    result: Any,
    labels: Path,
    quiz: Path | None,
    fmt: str,
    out: Path,
    annotators: Path | None,
    json_out: Path,
) -> dict[str, Any]:
    agg = result.aggregator
    return run_record(
        ctx,
        seed=ctx.params["seed"],
        method=result.method,
        label_type=result.label_type,
        estimator=type(agg).__name__,
        params=agg.get_params(),
        input={**_input_record(labels), "format": fmt, "quiz": file_record(quiz)},
        data=result.data(),
        fit=result.fit,
        evaluation={
            "accuracy_vs_gold": result.accuracy,
            "n_gold": result.n_gold,
            **{f"{k}_vs_gold": v for k, v in result.evaluation.items()},
        },
        annotators=result.annotator_records(),
        outputs={
            "consensus": out.resolve(),
            "annotators": None if annotators is None else annotators.resolve(),
            "json": json_out.resolve(),
        },
        versions={"pandas": _pandas_version()},
    )


def _pandas_version() -> str:
    """The version of pandas for the run record (without importing it if the run did not)."""
    pd = sys.modules.get("pandas")
    if pd is not None:
        return str(pd.__version__)
    from importlib.metadata import version

    return version("pandas")


def _input_record(labels: Path) -> dict[str, Any]:
    """Path and checksum of the label file, or of the files of a (Parquet) folder."""
    if labels.is_dir():
        return files_record(labels, sorted(p for p in labels.rglob("*") if p.is_file()))
    return file_record(labels) or {}


def _aggregate_on_dask(
    ctx: typer.Context,
    console: Console,
    labels: Path,
    out: Path,
    annotators: Path | None,
    json_out: Path,
    outputs: dict[str, Path],
    *,
    method: str,
    scheduler: str,
    seed: int,
    max_iter: int | None,
    tol: float | None,
    columns: tuple[str | None, str | None, str | None],
    refused: list[str],
) -> None:
    """``aggregate --scheduler``: the fit on Dask (see ``pipelines.aggregate_dask``)."""
    from crowdmed.pipelines.aggregate_dask import (
        DASK_METHODS,
        aggregate_dask,
        connect,
        write_consensus,
    )

    if refused:
        raise ValueError(
            f"`{refused[0]}` does not apply with --scheduler (a Parquet table of item, "
            "annotator, label); drop it or fit in memory without --scheduler."
        )
    if method not in {m.value for m in DASK_METHODS}:
        names = ", ".join(m.value for m in DASK_METHODS)
        raise ValueError(
            f"`--method` must be one of {names} with --scheduler; got {method}. Fit other "
            "methods in memory (without --scheduler)."
        )
    item_col, annotator_col, label_col = columns
    with connect(scheduler):
        description = f"Fitting {method} on {labels.name} with Dask"
        with _em_progress(console, description) as on_iteration:
            result = aggregate_dask(
                labels,
                method,
                seed=seed,
                max_iter=max_iter,
                tol=tol,
                item_col=item_col,
                annotator_col=annotator_col,
                label_col=label_col,
                callback=on_iteration,
            )
        for warning in result.fit["warnings"]:
            console.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True)
        import dask
        import pandas as pd

        record = run_record(
            ctx,
            seed=seed,
            method=result.method,
            estimator=type(result.aggregator.estimator).__name__,
            params=result.aggregator.estimator.get_params(),
            input={**_input_record(labels), "format": "parquet", "scheduler": scheduler},
            data=result.data(),
            fit=result.fit,
            evaluation={"accuracy_vs_gold": None, "n_gold": 0},
            outputs={
                "consensus": out.resolve(),
                "annotators": None if annotators is None else annotators.resolve(),
                "json": json_out.resolve(),
            },
            versions={"pandas": pd.__version__, "dask": dask.__version__},
        )
        # The consensus may be a Parquet folder written by the workers: written (atomically)
        # first, removed again if the other outputs fail.
        write_consensus(result.consensus, out)
        try:
            with _staged_outputs() as stage:
                if annotators is not None:
                    write_table(result.annotators(), stage(annotators))
                write_run_record(ctx, json_out, record, stage)
        except BaseException:
            if out.is_dir():
                shutil.rmtree(out, ignore_errors=True)
            else:
                out.unlink(missing_ok=True)
            raise
    _print_summary(console, result, False, record, outputs)


def _print_summary(
    console: Console, result: Any, use_gold: bool, record: dict[str, Any], outputs: dict[str, Path]
) -> None:
    cl, fit, n_gold = result.labels, result.fit, result.n_gold
    table = Table(title="crowdmed aggregate", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    label_type = getattr(result, "label_type", "nominal")
    table.add_row("method", result.method)
    if "chosen" in fit:
        scores = ", ".join(
            f"{name} {_format_float(score, 4)}" for name, score in fit["scores"].items()
        )
        table.add_row("chosen", fit["chosen"])
        criterion = fit.get("criterion", "likelihood")
        table.add_row(f"held-out {criterion}", f"per label, {fit['n_folds']} folds: {scores}")
    table.add_row("label type", label_type)
    table.add_row("items", f"{cl.n_items:,}")
    table.add_row("annotators", f"{cl.n_annotators:,}")
    table.add_row("labels", f"{cl.n_labels:,}")
    if label_type != "continuous":
        table.add_row("classes", f"{cl.n_classes}")
    table.add_row("iterations", "n/a" if fit["n_iter"] is None else str(fit["n_iter"]))
    converged = fit["converged"]
    table.add_row(
        "converged", "n/a" if converged is None else ("yes" if converged else "[red]no[/]")
    )
    if fit["log_likelihood"] is not None:
        table.add_row("log-likelihood", _format_float(fit["log_likelihood"], 2))
    evaluation = getattr(result, "evaluation", {})
    if n_gold and label_type == "continuous":
        errors = ", ".join(f"{k.upper()} {_format_float(v, 4)}" for k, v in evaluation.items())
        table.add_row("error vs gold", f"{errors or 'n/a'} ({n_gold:,} items)")
    elif n_gold:
        if use_gold and result.method == Method.GOLD_MAJORITY_VOTE.value:
            table.add_row(
                "accuracy vs gold",
                f"n/a ({n_gold:,} gold items gave the annotators' weights in the fit)",
            )
        elif use_gold:
            table.add_row("accuracy vs gold", f"n/a ({n_gold:,} gold items clamped in the fit)")
        else:
            table.add_row(
                "accuracy vs gold", f"{_format_float(result.accuracy)} ({n_gold:,} items)"
            )
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


DemoOutOpt = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="Folder for results.json, report.html, report.md and the tables."
    ),
]
MethodsOpt = Annotated[
    list[str] | None,
    _column(
        "--methods", "Methods to compare, comma-separated or repeated (all when omitted).", "-m"
    ),
]
DatasetsOpt = Annotated[
    list[str] | None,
    _column(
        "--datasets", "Bundled data sets, comma-separated or repeated (all when omitted).", "-d"
    ),
]
PartsOpt = Annotated[
    list[str] | None,
    _column(
        "--parts",
        "Parts to run, comma-separated or repeated: crowd (truth inference on the bundled "
        "label sets), masks (STAPLE on LIDC nodule masks), mitosis (the AggNet crowd loop on "
        "synthetic fields; needs torch). All when omitted.",
        "-p",
    ),
]


def _demo_options(
    methods: list[str] | None, datasets: list[str] | None, out: Path
) -> tuple[list[str] | None, list[str] | None]:
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
    return chosen, dataset_names


def demo(
    ctx: typer.Context,
    out: DemoOutOpt,
    methods: MethodsOpt = None,
    datasets: DatasetsOpt = None,
    seed: AggregateSeedOpt = 0,
    parts: PartsOpt = None,
) -> None:
    """Run the demo on bundled real data (and the synthetic crowd loop); write a report.

    Example: crowdmed demo --out demo-report --parts crowd,masks
    """
    console = _stderr()
    with _user_errors(ctx):
        chosen, dataset_names = _demo_options(methods, datasets, out)
        from crowdmed.pipelines.demo import run_demo

        with _reporter(console, "Starting the demo") as report:

            def on_progress(description: str, completed: int, total: int) -> None:
                report(description=description, completed=completed, total=total)

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
    report_path = out / "report.html"
    if "report.html" not in summary:  # the summary usually names the report already
        typer.echo(f"Report: {report_path}" if report_path.exists() else f"Results in: {out}")
