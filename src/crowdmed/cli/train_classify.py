"""``crowdmed train classify``: a classifier trained on the crowd labels of a file.

A thin shell over :func:`crowdmed.pipelines.classify.train_classifier`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crowdmed.cli._common import (
    _check_outputs,
    _format_float,
    _reporter,
    _stderr,
    _user_errors,
    run_params,
    save_model_folder,
)
from crowdmed.cli._options import (
    BatchSizeOpt,
    ChannelsOpt,
    DeviceOpt,
    EpochsOpt,
    ImageSizeOpt,
    LabelClassesOpt,
    LrOpt,
    MaybeImagesOpt,
    ModelDirOpt,
    OnDuplicateOpt,
    PatienceOpt,
    ResumeOpt,
    SeedOpt,
)
from crowdmed.pipelines.model_folder import MODEL_FILES

__all__ = ["classify"]

_TRAIN_METHODS = (
    "crowd-layer-mw, crowd-layer-vw, crowd-layer-vb, crowd-layer-vw+b, aggnet (two classes), "
    "dl-em, dl-dn, dl-wdn, dl-mv, dl-ds or dl-soft"
)

LabelsOpt = Annotated[
    Path,
    typer.Option(
        "--labels",
        "-l",
        help="Long label file (item,annotator,label; CSV/TSV/Parquet). A gold column is not "
        "used; give true classes with --val-labels.",
        show_default=False,
    ),
]
FeaturesOpt = Annotated[
    Path | None,
    typer.Option(
        "--features",
        help="Features of the items, a .npy array (n_rows, n_features); an MLP is trained. "
        "Needs --feature-ids.",
        metavar="NPY",
        show_default=False,
    ),
]
FeatureIdsOpt = Annotated[
    Path | None,
    typer.Option(
        "--feature-ids",
        help="The item id of each --features row, in row order: a text file with one id per "
        "line (no header) or a CSV with an 'item' column.",
        metavar="IDS",
        show_default=False,
    ),
]
MethodOpt = Annotated[str, typer.Option("--method", "-m", help=f"{_TRAIN_METHODS}.")]
ValLabelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--val-labels",
        help="CSV item,label with the true class of validation items; drives early stopping "
        "and the best epoch. Their inputs come from --features/--images unless "
        "--val-features/--val-images is given.",
        metavar="CSV",
        show_default=False,
    ),
]
ValFeaturesOpt = Annotated[
    Path | None,
    typer.Option(
        "--val-features",
        help="Features of the validation items (.npy); needs --val-feature-ids.",
        metavar="NPY",
        show_default=False,
    ),
]
ValFeatureIdsOpt = Annotated[
    Path | None,
    typer.Option(
        "--val-feature-ids",
        help="The item id of each --val-features row.",
        metavar="IDS",
        show_default=False,
    ),
]
ValImagesOpt = Annotated[
    Path | None,
    typer.Option(
        "--val-images", help="Folder with the validation images.", metavar="DIR", show_default=False
    ),
]
TtaOpt = Annotated[
    bool,
    typer.Option(
        "--tta",
        help="Make `predict` average over the 8 rotations/mirrors of each image by default.",
    ),
]


def classify(
    ctx: typer.Context,
    out: ModelDirOpt,
    labels: LabelsOpt,
    features: FeaturesOpt = None,
    feature_ids: FeatureIdsOpt = None,
    images: MaybeImagesOpt = None,
    method: MethodOpt = "crowd-layer-mw",
    val_labels: ValLabelsOpt = None,
    val_features: ValFeaturesOpt = None,
    val_feature_ids: ValFeatureIdsOpt = None,
    val_images: ValImagesOpt = None,
    epochs: EpochsOpt = 50,
    batch_size: BatchSizeOpt = 64,
    lr: LrOpt = 1e-3,
    patience: PatienceOpt = 10,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    image_size: ImageSizeOpt = None,
    channels: ChannelsOpt = None,
    tta: TtaOpt = False,
    resume: ResumeOpt = True,
    classes: LabelClassesOpt = None,
    on_duplicate: OnDuplicateOpt = "error",
) -> None:
    """Train a classifier on the labels of many annotators.

    The network is an MLP on --features or a small CNN on --images,
    matched to the items of --labels by item id. Validation (early
    stopping, best epoch) uses the true classes in --val-labels.

    MODEL_DIR gets the model (config.json, model.safetensors, data.json),
    history.csv, annotators.csv (per-annotator recall when the method
    models annotators; dl-wdn's learned head weights), run.json and
    checkpoint/. Rerunning the command
    continues an interrupted run; a larger --epochs trains longer.

    Example: crowdmed train classify --labels labels.csv --images imgs/
    --val-labels val.csv --out model/ --epochs 30
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.pipelines.classify import train_classifier

        names = (*MODEL_FILES, "history.csv", "annotators.csv", "run.json")
        inputs = [labels, features, feature_ids, val_labels, val_features, val_feature_ids]
        _check_outputs([p for p in inputs if p is not None], {f"--out {n}": out / n for n in names})
        with _reporter(console, f"Reading {labels.name}") as report:
            run = train_classifier(**ctx.params, progress=report)
            for note in run.notes:
                console.print(f"[yellow]Warning:[/] {escape(note)}")
            if run.skipped is not None:
                console.print(escape(run.skipped))
                return
            for warning in run.fit["warnings"]:
                console.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True)
            record = save_model_folder(
                ctx,
                run,
                out,
                seed=seed,
                params=run_params(ctx),
                method=run.method,
                network=run.network,
                inputs=run.inputs,
                data=run.data,
                fit=run.fit,
            )
    _print_summary(console, run, record, epochs, out)


def _print_summary(
    console: Console, run: Any, record: dict[str, Any], epochs: int, out: Path
) -> None:
    cl, fit = run.labels, run.fit
    table = Table(title="crowdmed train classify", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("method", run.method)
    n_params = run.network["n_parameters"]
    table.add_row("network", f"{run.network['name']} ({n_params:,} parameters)")
    text = f"{cl.n_items:,} ({cl.n_annotators:,} annotators, {cl.n_classes} classes)"
    table.add_row("items", text)
    if run.data["n_val"]:
        table.add_row("validation items", f"{run.data['n_val']:,}")
    epochs_text = f"{fit['epochs_run']} of {epochs}"
    if fit["resumed_from_epoch"] is not None:
        epochs_text += f" (resumed after epoch {fit['resumed_from_epoch']})"
    table.add_row("epochs", epochs_text)
    table.add_row("best epoch", str(fit["best_epoch"]))
    for name in ("val_auc", "val_accuracy", "loss"):
        if name in fit["best"]:
            table.add_row(f"best {name}", _format_float(fit["best"][name]))
    table.add_row("time", f"{record['elapsed_seconds']:.2f} s")
    table.add_row("model", str(out))
    console.print(table)
