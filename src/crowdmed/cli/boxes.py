"""Commands of the box consensus and detection workflow (``crowdmed boxes ...``)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer

from crowdmed._io import to_jsonable
from crowdmed._version import __version__
from crowdmed.cli._common import (
    _check_outputs,
    _environment,
    _progress,
    _sha256,
    _staged_outputs,
    _stderr,
    _step,
    _user_errors,
)

__all__ = ["register"]

boxes_app = typer.Typer(
    name="boxes",
    help="Consensus of several readers' bounding boxes and the readers' agreement.",
    no_args_is_help=True,
)


def _read_proficiency(path: Path) -> dict[Any, float]:
    if not path.is_file():
        raise FileNotFoundError(f"Proficiency file '{path}' does not exist; check the path.")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        table = pd.read_csv(path, sep=sep)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise ValueError(
            f"Proficiency file '{path}' must be a CSV with columns reader, proficiency: {exc}"
        ) from exc
    if not {"reader", "proficiency"} <= set(table.columns):
        raise ValueError(
            f"Proficiency file '{path}' must have columns reader, proficiency; got "
            f"{list(table.columns)}."
        )
    if table["reader"].duplicated().any():
        dup = table.loc[table["reader"].duplicated(), "reader"].iloc[0]
        raise ValueError(f"Proficiency file '{path}' lists reader {dup!r} twice; keep one row.")
    values = pd.to_numeric(table["proficiency"], errors="coerce")
    if values.isna().any():
        bad = table.loc[values.isna(), "reader"].iloc[0]
        raise ValueError(
            f"Proficiency file '{path}': reader {bad!r} has no numeric proficiency; give a "
            "positive number."
        )
    return dict(zip(table["reader"], values.astype(float), strict=True))


_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")


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


@boxes_app.command("fuse")
def fuse(
    ctx: typer.Context,
    boxes: Annotated[
        Path,
        typer.Argument(
            help="Readers' boxes: CSV/TSV with image, reader, class, xmin, ymin, xmax, ymax "
            "[, zmin, zmax] in pixels (VinDr spellings image_id, rad_id, class_id, x_min ... "
            "accepted; empty class and coordinates = read, nothing marked), or COCO JSON with "
            "a reader field on each annotation.",
            show_default=False,
            metavar="BOXES",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Consensus boxes (CSV or TSV): image, class, coordinates, confidence, "
            "n_readers, n_boxes, readers.",
        ),
    ],
    iou: Annotated[
        float, typer.Option("--iou", "--iou-thr", help="A box joins a cluster above this IoU.")
    ] = 0.4,
    proficiency: Annotated[
        Path | None,
        typer.Option(
            "--proficiency",
            help="CSV reader, proficiency with each reader's weight; estimated from the "
            "agreement when omitted.",
            show_default=False,
        ),
    ] = None,
    equal_weights: Annotated[
        bool,
        typer.Option("--equal-weights", help="Weigh all readers equally instead of estimating."),
    ] = False,
    readers_out: Annotated[
        Path | None,
        typer.Option(
            "--readers-out",
            help="Also write one row per reader: sensitivity, precision, false positives per "
            "image against the consensus, and proficiency.",
            show_default=False,
        ),
    ] = None,
    pairwise_out: Annotated[
        Path | None,
        typer.Option(
            "--pairwise-out",
            help="Also write the matrix of matched-box F1 between reader pairs.",
            show_default=False,
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Run record (version, parameters, input checksum, summary); <out>.json when "
            "omitted.",
            show_default=False,
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="Folder of the images: a box on an image that is not there is an error.",
            show_default=False,
        ),
    ] = None,
    classes: Annotated[
        list[str] | None,
        typer.Option(
            "--classes",
            help="Valid classes (repeat or comma-separate); other classes are an error.",
            show_default=False,
        ),
    ] = None,
    no_finding: Annotated[
        str | None,
        typer.Option(
            "--no-finding",
            help="Class meaning 'nothing found' (14 in VinDr-CXR): its rows are readings "
            "without boxes.",
            show_default=False,
        ),
    ] = None,
    max_iter: Annotated[
        int, typer.Option("--max-iter", help="Rounds of proficiency re-estimation.")
    ] = 10,
    min_confidence: Annotated[
        float,
        typer.Option(
            "--min-confidence",
            help="Consensus boxes for --readers-out have a confidence above this.",
        ),
    ] = 0.5,
) -> None:
    """Fuse several readers' boxes into consensus boxes with an agreement confidence.

    Example: crowdmed boxes fuse readers.csv -o fused.csv --readers-out readers.csv
    """
    from crowdmed.aggregation.detection.box_fusion import fuse_boxes
    from crowdmed.data.boxes import read_boxes
    from crowdmed.quality.box_agreement import pairwise_reader_f1, reader_agreement

    started = time.perf_counter()
    console = _stderr()
    with _user_errors(ctx):
        if proficiency is not None and equal_weights:
            raise ValueError("Use either `--proficiency` or `--equal-weights`, not both.")
        json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
        outputs = {"--out": out}
        if readers_out is not None:
            outputs["--readers-out"] = readers_out
        if pairwise_out is not None:
            outputs["--pairwise-out"] = pairwise_out
        for option, path in outputs.items():
            if option != "--json":
                _check_table_path(option, path)
        outputs["--json"] = json_out
        inputs = [boxes] if proficiency is None else [boxes, proficiency]
        _check_outputs(inputs, outputs)
        class_list = (
            [c.strip() for value in classes for c in value.split(",") if c.strip()]
            if classes
            else None
        )
        if images is not None and not images.is_dir():
            raise ValueError(f"`--images` must be a folder of images; '{images}' is not a folder.")
        with _progress(console) as progress:
            with _step(progress, f"Reading {boxes.name}"):
                frame = read_boxes(boxes, images=images, classes=class_list, no_finding=no_finding)
                weights = None if proficiency is None else _read_proficiency(proficiency)
            with _step(progress, "Fusing boxes"):
                fit_start = time.perf_counter()
                fused = fuse_boxes(
                    frame,
                    iou_thr=iou,
                    proficiency=weights,
                    estimate_proficiency=not equal_weights,
                    max_iter=max_iter,
                )
                fit_seconds = time.perf_counter() - fit_start
            readers_table = None
            pairwise = None
            if readers_out is not None:
                with _step(progress, "Scoring readers"):
                    readers_table = reader_agreement(
                        frame, fused, iou_thr=iou, min_confidence=min_confidence
                    )
            if pairwise_out is not None:
                with _step(progress, "Pairwise reader F1"):
                    pairwise = pairwise_reader_f1(frame, iou_thr=iou)
            is_box = frame["xmin"].notna().to_numpy()
            mean_confidence = float(fused["confidence"].mean()) if len(fused) else None
            record: dict[str, Any] = {
                "crowdmed_version": __version__,
                "command": "boxes fuse",
                "arguments": ctx.params,
                "params": {
                    "iou_thr": iou,
                    "proficiency": "given"
                    if weights is not None
                    else ("equal" if equal_weights else "estimated"),
                    "max_iter": max_iter,
                    "min_confidence": min_confidence,
                },
                "input": {"path": boxes.resolve(), "sha256": _sha256(boxes)},
                "data": {
                    "n_images": int(frame["image"].nunique()),
                    "n_readers": int(frame["reader"].nunique()),
                    "n_boxes": int(is_box.sum()),
                    "n_readings": len(frame.drop_duplicates(["image", "reader"])),
                    "dimensions": 3 if "zmin" in frame.columns else 2,
                },
                "fit": {
                    "n_iter": fused.attrs.get("n_iter"),
                    "converged": fused.attrs.get("converged"),
                    "proficiency": fused.attrs.get("proficiency"),
                    "seconds": fit_seconds,
                },
                "summary": {
                    "n_fused": len(fused),
                    "mean_confidence": mean_confidence,
                    "n_readers_histogram": {
                        str(k): int(v)
                        for k, v in fused["n_readers"].value_counts().sort_index().items()
                    },
                },
                "outputs": {name.lstrip("-"): path.resolve() for name, path in outputs.items()},
                "environment": _environment(pandas=pd.__version__),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            with _step(progress, "Writing outputs"), _staged_outputs() as stage:
                _write(fused, stage(out))
                if readers_table is not None and readers_out is not None:
                    _write(readers_table, stage(readers_out))
                if pairwise is not None and pairwise_out is not None:
                    pairwise.reset_index().to_csv(
                        stage(pairwise_out),
                        index=False,
                        sep="\t" if pairwise_out.suffix.lower() in (".tsv", ".tab") else ",",
                    )
                record["elapsed_seconds"] = time.perf_counter() - started
                stage(json_out).write_text(
                    json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8"
                )
    mean = mean_confidence
    console.print(
        f"Fused {int(np.sum(is_box)):,} boxes of {record['data']['n_readers']} readers into "
        f"{len(fused):,} consensus boxes"
        + (f" (mean agreement {mean:.3f})" if mean is not None else "")
        + f": {out}"
    )


def register(app: typer.Typer) -> None:
    """Add this workflow's commands to the ``crowdmed`` application."""
    app.add_typer(boxes_app, name="boxes")
