"""``crowdmed next LABELS --probs P --budget N --out next.csv``: which items to label next.

A thin shell over :func:`crowdmed.pipelines.next.next_items`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from crowdmed.cli._common import (
    _check_outputs,
    _check_table_outputs,
    _staged_outputs,
    _stderr,
    _user_errors,
    run_params,
    run_record,
    write_run_record,
)
from crowdmed.cli._options import (
    AnnotatorColOpt,
    ItemColOpt,
    JsonOpt,
    LabelClassesOpt,
    LabelColOpt,
    OnDuplicateOpt,
    number_option,
)

__all__ = ["next_command", "register"]

LabelsArg = Annotated[
    Path,
    typer.Argument(
        help="Long label file (item,annotator,label), CSV/TSV/Parquet.",
        metavar="LABELS",
        show_default=False,
    ),
]
ProbsOpt = Annotated[
    Path,
    typer.Option(
        "--probs",
        "-p",
        help="Classifier probabilities: item plus one p_<class> column per class (the output "
        "of crowdmed predict). Its items are the candidates, labelled or not.",
        show_default=False,
    ),
]
BudgetOpt = Annotated[
    int,
    number_option(
        "--budget",
        "-n",
        help="Number of items to return.",
        lo=1,
        hi=100_000_000,
        integer=True,
        show_default=False,
    ),
]
NextOutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Items to label next, best first (CSV, TSV or Parquet by suffix): rank, item, "
        "score, n_labels, consensus, confidence[, annotator].",
        show_default=False,
    ),
]
NextMethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        "-m",
        help="crowdmed (expected gain in consensus accuracy) or activelab.",
    ),
]
AssignOpt = Annotated[
    bool,
    typer.Option(
        "--assign", help="Also choose the annotator: the most reliable one who has not labelled it."
    ),
]


def next_command(
    ctx: typer.Context,
    labels: LabelsArg,
    probs: ProbsOpt,
    budget: BudgetOpt,
    out: NextOutOpt,
    method: NextMethodOpt = "crowdmed",
    assign: AssignOpt = False,
    classes: LabelClassesOpt = None,
    item_col: ItemColOpt = None,
    annotator_col: AnnotatorColOpt = None,
    label_col: LabelColOpt = None,
    on_duplicate: OnDuplicateOpt = "error",
    json_path: JsonOpt = None,
) -> None:
    """Rank items by how much one more annotation would improve their consensus.

    Example: crowdmed next labels.csv --probs probs.csv --budget 100 -o next.csv --assign
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed._tables import parse_class_list
        from crowdmed._validation import check_option
        from crowdmed.data.io import write_table
        from crowdmed.pipelines.aggregate import OnDuplicate
        from crowdmed.pipelines.next import next_items
        from crowdmed.pipelines.records import file_record

        if budget < 1:
            raise ValueError(f"`--budget` must be an integer >= 1; got {budget}.")
        json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
        _check_outputs([labels, probs], {"--out": out, "--json": json_out})
        _check_table_outputs({"--out": out})
        read = {
            "item": item_col,
            "annotator": annotator_col,
            "label": label_col,
            "classes": parse_class_list(classes),
            "on_duplicate": check_option(on_duplicate, OnDuplicate, "--on-duplicate").value,
        }
        plan = next_items(labels, probs, budget=budget, method=method, assign=assign, read=read)
        record = run_record(
            ctx,
            params=run_params(ctx),
            method=plan.method,
            data=plan.data,
            warnings=plan.warnings,
            inputs={"labels": file_record(labels), "probs": file_record(probs)},
            outputs={"next": out.resolve(), "json": json_out.resolve()},
        )
        with _staged_outputs() as stage:
            write_table(plan.table, stage(out))
            write_run_record(ctx, json_out, record, stage)
    for w in plan.warnings:
        console.print(f"[yellow]Warning:[/] {escape(w)}", soft_wrap=True)
    console.print(
        f"{len(plan.table)} of {plan.data['n_eligible']} eligible items ({plan.method}) -> "
        f"{escape(str(out))}",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``crowdmed next`` to ``app``."""
    app.command("next")(next_command)
