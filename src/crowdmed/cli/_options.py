"""Option declarations shared by several commands, each declared once as a typed alias.

A command writes ``seed: SeedOpt = 0``: the option's name, help and metavar come from here;
its default stays in the command's signature (and so in its ``--help``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "BatchSizeOpt",
    "ChannelsOpt",
    "EpochsOpt",
    "ImagesOpt",
    "JsonOpt",
    "LrOpt",
    "MaybeImagesOpt",
    "ModelDirOpt",
    "PatienceOpt",
    "PredictOpt",
    "ResumeOpt",
    "SeedOpt",
]

#: ``--out`` of a training command: the model folder.
ModelDirOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Model folder (created; rerunning continues its checkpoint).",
        metavar="MODEL_DIR",
        show_default=False,
    ),
]

#: ``--json``: where the run record goes.
JsonOpt = Annotated[
    Path | None,
    typer.Option(
        "--json",
        help="Run record (version, params, seed, input checksums); <out>.json when omitted.",
        show_default=False,
    ),
]

SeedOpt = Annotated[
    int,
    typer.Option("--seed", help="Random seed (weight initialisation, data order, dropout)."),
]

_IMAGES = typer.Option(
    "--images",
    help="Folder with one image per item or case, named after its id (<id>.png).",
    metavar="DIR",
    show_default=False,
)
#: ``--images`` where it is required, and where it is one of several kinds of input.
ImagesOpt = Annotated[Path, _IMAGES]
MaybeImagesOpt = Annotated[Path | None, _IMAGES]

EpochsOpt = Annotated[int, typer.Option("--epochs", help="Maximum number of epochs.")]

BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Mini-batch size.")]

LrOpt = Annotated[float, typer.Option("--lr", help="Learning rate.")]

PatienceOpt = Annotated[
    int,
    typer.Option(
        "--patience",
        help="Stop after this many epochs without a better validation score (training loss "
        "without validation data) and keep the best epoch; 0 trains every epoch.",
    ),
]

ChannelsOpt = Annotated[
    int | None,
    typer.Option(
        "--channels",
        help="Image channels: 1 (grey) or 3 (RGB).",
        show_default=False,
    ),
]

ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume/--no-resume",
        help="Continue from MODEL_DIR/checkpoint/ when it holds a run with the same settings "
        "and inputs (raise --epochs to train longer); --no-resume starts over.",
    ),
]

PredictOpt = Annotated[
    Path | None,
    typer.Option(
        "--predict",
        help="After training, predict on the images of this folder; the predictions are "
        "written to MODEL_DIR.",
        metavar="DIR",
        show_default=False,
    ),
]
