"""``crowdmed predict MODEL_DIR``: predict with any model folder written by ``crowdmed train``.

A thin shell over :func:`crowdmed.pipelines.predict.predict_folder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from crowdmed.cli._common import (
    _check_outputs,
    _check_table_outputs,
    _import_torch,
    _reporter,
    _staged_outputs,
    _stderr,
    _torch_version,
    _user_errors,
    run_record,
    write_run_record,
)
from crowdmed.cli._options import JsonOpt, MaybeImagesOpt

__all__ = ["predict"]

_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".json")

ModelDirArg = Annotated[
    Path,
    typer.Argument(
        help="Model folder written by `crowdmed train`.", metavar="MODEL_DIR", show_default=False
    ),
]
PredictionsOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Predictions (CSV, TSV or Parquet by suffix): item, label, confidence, "
        "p_<class>... for a classifier (then aux_<t>... for a multitask network); item, "
        "value for a regressor; image, class, xmin, ymin, xmax, ymax, score for a "
        "detector. For a segmentation model a folder: <case>.png label maps (<case>.nii.gz "
        "for volumes) plus predictions.csv (case, fraction_<class>...).",
        show_default=False,
    ),
]
FeaturesOpt = Annotated[
    Path | None,
    typer.Option(
        "--features",
        help="Features (.npy, n_rows x n_features) of a classifier trained on features; one "
        "prediction per row. Needs --feature-ids.",
        metavar="NPY",
        show_default=False,
    ),
]
FeatureIdsOpt = Annotated[
    Path | None,
    typer.Option(
        "--feature-ids",
        help="The item id of each --features row: a text file with one id per line or a CSV "
        "with an 'item' column.",
        metavar="IDS",
        show_default=False,
    ),
]
TtaOpt = Annotated[
    bool | None,
    typer.Option(
        "--tta/--no-tta",
        help="Classifier on images: average over the 8 rotations/mirrors of each image; the "
        "model's `train classify --tta` setting when omitted.",
        show_default=False,
    ),
]


def _is_prediction_folder(out: Path) -> bool:
    """True for a folder written by an earlier ``crowdmed predict`` of a segmentation model."""
    return (out / "predictions.csv").is_file() and all(
        p.suffix.lower() in (".png", ".gz") or p.name == "predictions.csv" or p.name[0] == "."
        for p in out.iterdir()
    )


def _check_segmentation_out(out: Path, json_out: Path, sources: dict[str, Path | None]) -> None:
    if out.suffix.lower() in _TABLE_SUFFIXES or (out.exists() and not out.is_dir()):
        raise ValueError(
            f"`--out` of a segmentation model is a folder (label maps plus predictions.csv); "
            f"'{out}' is a file name. Pass a folder such as `--out predictions/`."
        )
    if out.is_dir() and any(out.iterdir()) and not _is_prediction_folder(out):
        raise ValueError(
            f"`--out` folder '{out}' is not empty and holds no earlier predictions; choose a "
            "new or empty folder."
        )
    for option, folder in sources.items():
        if folder is not None and folder.resolve() == out.resolve():
            raise ValueError(f"`--out` must not be the {option} folder; choose another one.")
    if json_out.resolve().parent == out.resolve():
        raise ValueError(f"`--json` must not be inside the `--out` folder '{out}'.")


def _check_out(
    task: str, model_dir: Path, out: Path, json_out: Path, inputs: dict[str, Path | None]
) -> dict[str, Path]:
    """Check the outputs before any work; return them by name."""
    model_file = model_dir / "model.safetensors"
    files = [p for p in (inputs["--features"], inputs["--feature-ids"], model_file) if p]
    if task != "segmentation":
        _check_outputs(files, {"--out": out, "--json": json_out})
        _check_table_outputs({"--out": out})
        return {"predictions": out, "json": json_out}
    _check_segmentation_out(out, json_out, {"--images": inputs["--images"], "MODEL_DIR": model_dir})
    table = out / "predictions.csv"
    _check_outputs([model_file], {"--out predictions.csv": table, "--json": json_out})
    return {"predictions": out, "table": table, "json": json_out}


def predict(
    ctx: typer.Context,
    model_dir: ModelDirArg,
    out: PredictionsOpt,
    images: MaybeImagesOpt = None,
    features: FeaturesOpt = None,
    feature_ids: FeatureIdsOpt = None,
    tta: TtaOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Predict with a model trained by `crowdmed train` (any task).

    The task is read from MODEL_DIR: a classifier gives class probabilities,
    a detector boxes, a segmentation model label maps; a folder saved by
    CrowdRegressor gives values, one saved by MultiTaskClassifier class
    probabilities and the auxiliary outputs. --images gives one
    prediction per file (item = file name without suffix); a classifier
    resizes them to the training size, a detector needs that size, a
    segmentation model takes any size (and volumes when trained on them).

    Example: crowdmed predict model/ --images new_imgs/ --out predictions.csv

    Example: crowdmed predict unet/ --images new_imgs/ --out masks/
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.pipelines.predict import model_task, predict_folder

        json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
        _import_torch("predict")
        task = model_task(model_dir)
        sources = {"--images": images, "--features": features, "--feature-ids": feature_ids}
        outputs = _check_out(task, model_dir, out, json_out, sources)
        with _reporter(console, "Predicting") as report:
            result = predict_folder(
                model_dir,
                images=images,
                features=features,
                feature_ids=feature_ids,
                tta=tta,
                progress=report,
            )
            report(description="Writing outputs")
            record = run_record(
                ctx,
                task=task,
                model=result.model_record(),
                **result.details,
                inputs=result.inputs,
                n_items=result.n_items,
                versions=_torch_version(),
                outputs={name: p.resolve() for name, p in outputs.items()},
            )
            with _staged_outputs() as stage:
                _write(result, outputs, stage)
                write_run_record(ctx, json_out, record, stage)
    _finish(console, result, out)


def _write(result: Any, outputs: dict[str, Path], stage: Any) -> None:
    from crowdmed.data.io import write_table
    from crowdmed.pipelines.segment import write_segmentations

    if result.segmentations is None:
        write_table(result.table, stage(outputs["predictions"]))
    else:
        write_segmentations(stage, outputs["predictions"], outputs["table"], result.segmentations)


def _finish(console: Any, result: Any, out: Path) -> None:
    where = escape(str(out))
    d = result.details
    if result.task == "segmentation":
        from crowdmed.pipelines.segment import remove_stale_label_maps

        remove_stale_label_maps(out, result.segmentations.file_names())
        console.print(
            f"Segmented {result.n_items:,} images into {d['n_classes']} classes with "
            f"{d['method']}: {where}"
        )
    elif result.task == "detection":
        console.print(
            f"Found {d['n_boxes']:,} boxes on {result.n_items:,} images with {d['variant']}: "
            f"{where}"
        )
    else:
        console.print(f"Predicted {result.n_items:,} items with {d['method']}: {where}")
