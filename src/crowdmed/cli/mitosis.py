"""``crowdmed mitosis synthesize | train | detect | evaluate``: the AggNet mitosis workflow.

Thin shells over :mod:`crowdmed.pipelines.mitosis`: synthetic fields for a demo, the
multi-scale detector, its candidates and their evaluation against reference points.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from crowdmed._io import to_jsonable
from crowdmed.cli._common import (
    _check_outputs,
    _import_torch,
    _reporter,
    _staged_outputs,
    _stderr,
    _torch_version,
    _user_errors,
    run_record,
    save_model_folder,
    write_run_record,
)
from crowdmed.cli._options import BatchSizeOpt, LrOpt, ModelDirOpt, SeedOpt, number_option
from crowdmed.pipelines.model_folder import MODEL_FILES

__all__ = ["mitosis_app", "register"]

mitosis_app = typer.Typer(
    name="mitosis",
    help="Mitosis detection in H&E high-power fields (AggNet): synthesize, train, detect, "
    "evaluate.",
    no_args_is_help=True,
    add_completion=False,
)


def _opt(*names: str, help_text: str, metavar: str | None = None) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help_text, metavar=metavar, show_default=False)


FieldsOpt = Annotated[
    Path, _opt("--images", help_text="Folder of PNG/TIFF/JPEG high-power fields.", metavar="DIR")
]
PointsOpt = Annotated[
    Path,
    _opt(
        "--points",
        help_text="CSV image,x,y of the mitoses (x column, y row, in pixels); every image "
        "listed, one without mitoses once with empty x and y.",
        metavar="CSV",
    ),
]
ValFieldsOpt = Annotated[
    Path | None,
    _opt(
        "--val-images",
        help_text="Validation fields; choose the operating point there.",
        metavar="DIR",
    ),
]
ValPointsOpt = Annotated[
    Path | None,
    _opt("--val-points", help_text="CSV image,x,y of the validation fields.", metavar="CSV"),
]
ScalesOpt = Annotated[str, typer.Option("--scales", help="Image scales, one network each.")]
RadiusOpt = Annotated[
    float,
    number_option(
        "--radius",
        help="Matching and suppression radius in pixels (30 px at 40x).",
        lo=0,
        hi=10_000,
        lo_open=True,
    ),
]
StainOpt = Annotated[
    Path | None,
    _opt(
        "--stain-reference",
        help_text="A reference field: Macenko-normalise every field to its staining (needs "
        "torchstain: the pathology extra of crowdmed).",
        metavar="IMAGE",
    ),
]
ModelOpt = Annotated[
    Path,
    _opt(
        "--model",
        help_text="Model folder written by `crowdmed mitosis train`.",
        metavar="MODEL_DIR",
    ),
]
CandidatesOutOpt = Annotated[
    Path, _opt("--out", "-o", help_text="Candidates CSV: image, x, y, score.")
]
ThresholdOpt = Annotated[
    float | None,
    number_option(
        "--threshold",
        help="Operating point on the detection map; the model's (chosen on validation) "
        "when omitted. 0 keeps every local maximum (for ROC curves).",
        lo=0,
        hi=1,
        show_default=False,
    ),
]
DetectRadiusOpt = Annotated[
    float | None,
    number_option(
        "--radius",
        help="Suppression radius in pixels; the model's when omitted.",
        lo=0,
        hi=10_000,
        lo_open=True,
        show_default=False,
    ),
]
MapsOpt = Annotated[
    Path | None,
    _opt(
        "--maps",
        help_text="Folder for the detection maps: <image>.png (probability x 255) and <image>.npy.",
        metavar="DIR",
    ),
]
TtaOpt = Annotated[
    bool, typer.Option("--tta/--no-tta", help="Average over the 8 rotations/mirrors.")
]


@mitosis_app.command()
def synthesize(
    ctx: typer.Context,
    out: Annotated[
        Path, _opt("--out", "-o", help_text="Folder for the PNG fields and points.csv.")
    ],
    n_images: Annotated[
        int,
        number_option("--n-images", "-n", help="Number of fields.", lo=1, hi=100_000, integer=True),
    ] = 20,
    size: Annotated[
        int,
        number_option(
            "--size", help="Side of each square field in pixels.", lo=32, hi=16_384, integer=True
        ),
    ] = 256,
    stain_variation: Annotated[
        float,
        number_option(
            "--stain-variation", help="Per-image stain variation (0 to 0.5).", lo=0, hi=0.5
        ),
    ] = 0.1,
    seed: SeedOpt = 0,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Fields are named <prefix>_000, <prefix>_001, ...")
    ] = "synthetic",
) -> None:
    """Write synthetic H&E high-power fields with mitoses and their points.csv.

    The fields are synthetic (a two-stain optical model, not tissue): for demos
    and tests. Their nuclei correspond to about half the resolution of a 40x
    field, so use a matching radius of 15 px with them.

    Example: crowdmed mitosis synthesize --out fields/ --n-images 20 --seed 0
    """
    with _user_errors(ctx):
        from crowdmed.pathology.synthetic import make_synthetic_fields

        if out.exists() and not out.is_dir():
            raise ValueError(f"`--out` must be a folder; '{out}' is a file.")
        if out.is_dir() and any(out.iterdir()):
            raise ValueError(f"`--out` folder '{out}' is not empty; pass a new or empty folder.")
        from crowdmed.pipelines.memory import check_memory

        check_memory(  # RGB float64 fields while they are drawn
            24.0 * n_images * size * size,
            f"{n_images} fields of {size} x {size} pixels",
            "lower --size or --n-images",
        )
        fields = make_synthetic_fields(
            n_images,
            size=(size, size),
            stain_variation=stain_variation,
            random_state=seed,
            prefix=prefix,
        )
        fields.save(out)
    typer.echo(
        f"Wrote {n_images} synthetic fields with {len(fields.points)} mitoses: {out / 'points.csv'}"
    )


@mitosis_app.command("train")
def train_cmd(
    ctx: typer.Context,
    images: FieldsOpt,
    points: PointsOpt,
    out: ModelDirOpt,
    val_images: ValFieldsOpt = None,
    val_points: ValPointsOpt = None,
    scales: ScalesOpt = "0.33,0.66,1.0",
    epochs: Annotated[
        int, number_option("--epochs", help="Epochs per scale.", lo=1, hi=100_000, integer=True)
    ] = 10,
    batch_size: BatchSizeOpt = 64,
    lr: LrOpt = 1e-3,
    radius: RadiusOpt = 30.0,
    stain_reference: StainOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Train the multi-scale AggNet mitosis detector on point annotations.

    One network per scale learns 33x33 patches (positives at the points in all
    rotations and mirrors, about 3:7 positives to negatives). With
    --val-images/--val-points the operating point maximises F1 on the
    validation fields; otherwise it is 0.5. MODEL_DIR gets the detector
    (config.json, model.safetensors), history.csv and run.json.

    Example: crowdmed mitosis train --images train/ --points train/points.csv
    --val-images val/ --val-points val/points.csv --out model/ --radius 15
    """
    console = _stderr()
    with _user_errors(ctx):
        _import_torch("mitosis train")
        from crowdmed.pipelines.mitosis import parse_scales, train_mitosis

        scale_list = parse_scales(scales)
        if out.exists() and not out.is_dir():
            raise ValueError(f"`--out` must be a folder for the model; '{out}' is a file.")
        inputs = [p for p in (points, val_points, stain_reference) if p is not None]
        names = (*MODEL_FILES, "history.csv", "run.json")
        _check_outputs(inputs, {f"--out {n}": out / n for n in names})
        with _reporter(console, "Reading fields") as report:
            run = train_mitosis(
                images,
                points,
                val_images=val_images,
                val_points=val_points,
                scales=scale_list,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                radius=radius,
                stain_reference=stain_reference,
                seed=seed,
                progress=report,
            )
        d = run.detector
        record = save_model_folder(
            ctx,
            run,
            out,
            seed=seed,
            settings=d.settings,
            threshold=d.threshold,
            val_f1=run.val_f1,
            inputs=run.inputs,
        )
    table = Table(title="crowdmed mitosis train", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("fields", f"{run.n_fields} ({run.n_points} mitoses)")
    table.add_row("scales", ", ".join(f"{s:g}" for s in scale_list))
    table.add_row("epochs per scale", str(epochs))
    table.add_row("threshold", f"{d.threshold:.4f}")
    if run.val_f1 is not None:
        table.add_row("validation F1", f"{run.val_f1:.3f}")
    table.add_row("time", f"{record['elapsed_seconds']:.1f} s")
    table.add_row("model", str(out))
    console.print(table)


def _write_maps(stage: Callable[[Path], Path], maps: Path, prob_maps: dict[Any, Any]) -> None:
    import numpy as np
    from PIL import Image

    for name, prob in prob_maps.items():
        grey = np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(grey).save(stage(maps / f"{name}.png"), format="PNG")
        np.save(stage(maps / f"{name}.npy"), prob.astype(np.float32))


@mitosis_app.command("detect")
def detect_cmd(
    ctx: typer.Context,
    model: ModelOpt,
    images: Annotated[
        Path, _opt("--images", help_text="Folder of PNG/TIFF/JPEG fields.", metavar="DIR")
    ],
    out: CandidatesOutOpt,
    threshold: ThresholdOpt = None,
    radius: DetectRadiusOpt = None,
    maps: MapsOpt = None,
    tta: TtaOpt = True,
) -> None:
    """Detect mitosis candidates in every field of a folder.

    Example: crowdmed mitosis detect --model model/ --images test/
    --out candidates.csv
    """
    console = _stderr()
    with _user_errors(ctx):
        _import_torch("mitosis detect")
        from crowdmed.pipelines.mitosis import detect_folder
        from crowdmed.pipelines.records import file_record

        if maps is not None and maps.exists() and not maps.is_dir():
            raise ValueError(f"`--maps` must be a folder; '{maps}' is a file.")
        json_out = out.with_name(out.name + ".json")
        model_file = model / MODEL_FILES[1]
        _check_outputs([model_file], {"--out": out, "--out .json": json_out})
        with _reporter(console, "Detecting") as report:
            found = detect_folder(
                model,
                images,
                threshold=threshold,
                radius=radius,
                tta=tta,
                maps=maps is not None,
                progress=report,
            )
        record = run_record(
            ctx,
            model=file_record(model_file),
            threshold=found.threshold,
            radius=found.radius,
            tta=tta,
            inputs=found.inputs,
            n_candidates=len(found.candidates),
            versions=_torch_version(),
        )
        with _staged_outputs() as stage:
            found.candidates.to_csv(stage(out), index=False)
            if maps is not None:
                _write_maps(stage, maps, found.maps)
            write_run_record(ctx, json_out, record, stage)
    console.print(f"Found {len(found.candidates)} candidates in {found.n_fields} fields: {out}")


@mitosis_app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    candidates: Annotated[
        Path, _opt("--candidates", help_text="Candidates CSV image,x,y[,score].", metavar="CSV")
    ],
    points: Annotated[Path, _opt("--points", help_text="Reference CSV image,x,y.", metavar="CSV")],
    radius: Annotated[
        float,
        number_option(
            "--radius",
            help="Matching radius in pixels at full resolution.",
            lo=0,
            hi=10_000,
            lo_open=True,
        ),
    ] = 30.0,
    scale: Annotated[
        float,
        number_option(
            "--scale",
            help="Scale of the coordinates; the radius becomes radius x scale.",
            lo=0,
            hi=100,
            lo_open=True,
        ),
    ] = 1.0,
    threshold: Annotated[
        float | None,
        number_option(
            "--threshold",
            help="Keep candidates with score >= this first.",
            lo=0,
            hi=1,
            show_default=False,
        ),
    ] = None,
    duplicates: Annotated[
        str,
        typer.Option(
            "--duplicates",
            help="A second detection of a matched point: 'ignore' (the paper's rule: one TP "
            "per mitosis) or 'fp'.",
        ),
    ] = "ignore",
    out: Annotated[
        Path | None,
        _opt("--out", "-o", help_text="Per-image table (CSV) and <out>.json with the totals."),
    ] = None,
) -> None:
    """Precision, recall, F1 and candidate AUC of detections against reference points.

    A detection within the radius of an unmatched reference point is a true
    positive (nearest point, highest scores first); each point is matched once.

    Example: crowdmed mitosis evaluate --candidates candidates.csv
    --points test/points.csv --radius 15
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.pipelines.mitosis import evaluate_files

        result, names = evaluate_files(
            candidates,
            points,
            radius=radius,
            scale=scale,
            threshold=threshold,
            duplicates=duplicates,
        )
        if out is not None:
            json_out = out.with_name(out.name + ".json")
            _check_outputs([candidates, points], {"--out": out, "--out .json": json_out})
            record = run_record(ctx, overall=result.summary(), n_images=len(names))
            with _staged_outputs() as stage:
                result.per_image.to_csv(stage(out), index=False)
                write_run_record(ctx, json_out, record, stage)
    table = Table(title="crowdmed mitosis evaluate", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("images", str(len(names)))
    table.add_row("radius", f"{result.radius:g} px")
    table.add_row("TP / FP / FN", f"{result.tp} / {result.fp} / {result.fn}")
    for name in ("precision", "recall", "f1", "auc"):
        table.add_row(name, f"{getattr(result, name):.4f}")
    console.print(table)
    typer.echo(json.dumps(to_jsonable(result.summary())))


def register(app: typer.Typer) -> None:
    """Add ``crowdmed mitosis ...`` to the application."""
    app.add_typer(mitosis_app, name="mitosis")
