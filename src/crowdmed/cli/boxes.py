"""``crowdmed boxes fuse``: a thin shell over :func:`crowdmed.pipelines.boxes.fuse_box_file`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from crowdmed.cli._common import (
    _check_outputs,
    _reporter,
    _staged_outputs,
    _stderr,
    _user_errors,
    run_record,
    write_run_record,
)
from crowdmed.cli._options import JsonOpt, number_option
from crowdmed.pipelines.records import file_record

__all__ = ["register"]

boxes_app = typer.Typer(
    name="boxes",
    help="Consensus of several readers' bounding boxes and the readers' agreement.",
    no_args_is_help=True,
)

_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")

BoxesArg = Annotated[
    Path,
    typer.Argument(
        help="Readers' boxes: CSV/TSV with image, reader, class, xmin, ymin, xmax, ymax [, zmin, "
        "zmax] in pixels (VinDr spellings image_id, rad_id, class_id, x_min ... accepted; "
        "empty class and coordinates = read, nothing marked), or COCO JSON with a reader "
        "field on each annotation.",
        show_default=False,
        metavar="BOXES",
    ),
]
FusedOutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Consensus boxes (CSV or TSV): image, class, coordinates, confidence (boxes in the "
        "cluster), agreement (share of readers), n_readers, n_boxes, readers.",
    ),
]
IouOpt = Annotated[
    float,
    number_option(
        "--iou", "--iou-thr", help="A box joins a cluster above this IoU.", lo=0, hi=1, lo_open=True
    ),
]


def _option(name: str, help_text: str) -> typer.models.OptionInfo:
    return typer.Option(name, help=help_text, show_default=False)


ProficiencyOpt = Annotated[
    Path | None,
    _option(
        "--proficiency",
        "CSV reader, proficiency with each reader's weight; estimated from the agreement when "
        "omitted.",
    ),
]
EqualWeightsOpt = Annotated[
    bool, typer.Option("--equal-weights", help="Weigh all readers equally instead of estimating.")
]
ReadersOutOpt = Annotated[
    Path | None,
    _option(
        "--readers-out",
        "Also write one row per reader: sensitivity, precision, false positives per image "
        "against the consensus, and proficiency.",
    ),
]
PairwiseOutOpt = Annotated[
    Path | None,
    _option("--pairwise-out", "Also write the matrix of matched-box F1 between reader pairs."),
]
BoxImagesOpt = Annotated[
    Path | None,
    _option("--images", "Folder of the images: a box on an image that is not there is an error."),
]
ClassesOpt = Annotated[
    list[str] | None,
    _option("--classes", "Valid classes (repeat or comma-separate); other classes are an error."),
]
NoFindingOpt = Annotated[
    str | None,
    _option(
        "--no-finding",
        "Class meaning 'nothing found' (14 in VinDr-CXR): its rows are readings without boxes.",
    ),
]
MaxIterOpt = Annotated[
    int,
    number_option(
        "--max-iter", help="Rounds of proficiency re-estimation.", lo=0, hi=100_000, integer=True
    ),
]
MinConfidenceOpt = Annotated[
    float,
    number_option(
        "--min-confidence",
        help="Consensus boxes for --readers-out have an agreement (share of readers) above this.",
        lo=0,
        hi=1,
    ),
]


def _check_table_path(option: str, path: Path) -> None:
    """Fail before any work when a table output is not named as a CSV/TSV file."""
    if path.suffix.lower() not in _TABLE_SUFFIXES:
        raise ValueError(
            f"`{option}` '{path}' must be a .csv or .tsv table (got suffix "
            f"{path.suffix!r}); name it e.g. '{path.with_suffix('.csv').name}'."
        )


def _write(frame: pd.DataFrame, path: Path) -> None:
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    frame.to_csv(path, index=False, sep=sep)


def _outputs(out: Path, tables: dict[str, Path | None], json_out: Path) -> dict[str, Path]:
    outputs = {"--out": out, **{k: v for k, v in tables.items() if v is not None}}
    for option, path in outputs.items():
        _check_table_path(option, path)
    return {**outputs, "--json": json_out}


@boxes_app.command("fuse")
def fuse(
    ctx: typer.Context,
    boxes: BoxesArg,
    out: FusedOutOpt,
    iou: IouOpt = 0.4,
    proficiency: ProficiencyOpt = None,
    equal_weights: EqualWeightsOpt = False,
    readers_out: ReadersOutOpt = None,
    pairwise_out: PairwiseOutOpt = None,
    json_path: JsonOpt = None,
    images: BoxImagesOpt = None,
    classes: ClassesOpt = None,
    no_finding: NoFindingOpt = None,
    max_iter: MaxIterOpt = 10,
    min_confidence: MinConfidenceOpt = 0.5,
) -> None:
    """Fuse several readers' boxes into consensus boxes with an agreement confidence.

    Example: crowdmed boxes fuse readers.csv -o fused.csv --readers-out readers.csv
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.pipelines.boxes import fuse_box_file

        if proficiency is not None and equal_weights:
            raise ValueError("Use either `--proficiency` or `--equal-weights`, not both.")
        json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
        tables = {"--readers-out": readers_out, "--pairwise-out": pairwise_out}
        outputs = _outputs(out, tables, json_out)
        _check_outputs([boxes] if proficiency is None else [boxes, proficiency], outputs)
        names = [c.strip() for v in classes or [] for c in v.split(",") if c.strip()] or None
        with _reporter(console, f"Fusing the boxes of {boxes.name}"):
            result = fuse_box_file(
                boxes,
                iou_thr=iou,
                proficiency=proficiency,
                equal_weights=equal_weights,
                images=images,
                classes=names,
                no_finding=no_finding,
                max_iter=max_iter,
                min_confidence=min_confidence,
                readers=readers_out is not None,
                pairwise=pairwise_out is not None,
            )
        record = run_record(
            ctx,
            params=result.params,
            input=file_record(boxes),
            data=result.data,
            fit=result.fit,
            summary=result.summary,
            outputs={name.lstrip("-"): path.resolve() for name, path in outputs.items()},
            versions={"pandas": pd.__version__},
        )
        with _staged_outputs() as stage:
            _write(result.fused, stage(out))
            if result.readers is not None and readers_out is not None:
                _write(result.readers, stage(readers_out))
            if result.pairwise is not None and pairwise_out is not None:
                _write(result.pairwise.reset_index(), stage(pairwise_out))
            write_run_record(ctx, json_out, record, stage)
    agreement = result.summary["mean_agreement"]
    console.print(
        f"Fused {result.data['n_boxes']:,} boxes of {result.data['n_readers']} readers into "
        f"{len(result.fused):,} consensus boxes"
        + (
            f" (mean agreement {agreement:.3f} of the readers, mean confidence "
            f"{result.summary['mean_confidence']:.2f} boxes)"
            if agreement is not None
            else ""
        )
        + f": {out}"
    )


def register(app: typer.Typer) -> None:
    """Add this workflow's commands to the ``crowdmed`` application."""
    app.add_typer(boxes_app, name="boxes")
