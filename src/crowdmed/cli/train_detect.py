"""``crowdmed train detect``: a detector trained on the boxes of several readers.

A thin shell over :func:`crowdmed.pipelines.detect.train_detection`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from crowdmed.cli._common import (
    _check_outputs,
    _reporter,
    _stderr,
    _user_errors,
    run_params,
    save_model_folder,
)
from crowdmed.cli._options import (
    BatchSizeOpt,
    DeviceOpt,
    EpochsOpt,
    ImagesOpt,
    ModelDirOpt,
    PredictOpt,
    SeedOpt,
    number_option,
)
from crowdmed.pipelines.model_folder import MODEL_FILES

__all__ = ["detect"]

BoxesOpt = Annotated[
    Path,
    typer.Option(
        "--boxes",
        help="Box table of several readers (CSV/TSV image,reader,class,xmin,ymin,xmax,ymax "
        "in pixels) or COCO JSON with a reader per annotation; one --images image per "
        "box-table image.",
        metavar="READERS.csv|coco.json",
        show_default=False,
    ),
]
VariantOpt = Annotated[
    str,
    typer.Option(
        "--variant",
        help="The boxes learnt from: all-readers (every reader's box), fused (consensus "
        "boxes) or earl (consensus boxes, losses weighted by the readers' agreement).",
    ),
]
IouThrOpt = Annotated[
    float,
    number_option(
        "--iou-thr",
        help="IoU at which reader boxes are fused.",
        lo=0,
        hi=1,
        lo_open=True,
        hi_open=True,
    ),
]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Start from these detector weights (the MODEL_DIR of an earlier run, or a .pt "
        "state dict) instead of a random initialisation.",
        metavar="PATH",
        show_default=False,
    ),
]
DetectorOpt = Annotated[
    str,
    typer.Option(
        "--detector",
        help="centernet (small anchor-free CenterNet, one stride-4 output, AdamW; learns "
        "fastest on small images) or fcos (torchvision FCOS, SGD).",
    ),
]
DetectLrOpt = Annotated[
    float | None,
    number_option(
        "--lr",
        help="Peak learning rate (warm-up, then cosine decay); default 0.002 for centernet, "
        "0.03 for fcos",
        lo=0,
        hi=10,
        lo_open=True,
        show_default=False,
    ),
]
ChannelsOpt = Annotated[
    int,
    number_option(
        "--channels", help="Image channels: 1 (grey) or 3 (RGB).", choices=(1, 3), integer=True
    ),
]


def detect(
    ctx: typer.Context,
    boxes: BoxesOpt,
    images: ImagesOpt,
    out: ModelDirOpt,
    variant: VariantOpt = "earl",
    detector: DetectorOpt = "centernet",
    iou_thr: IouThrOpt = 0.4,
    epochs: EpochsOpt = 20,
    batch_size: BatchSizeOpt = 16,
    lr: DetectLrOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    channels: ChannelsOpt = 1,
    checkpoint: CheckpointOpt = None,
    predict: PredictOpt = None,
) -> None:
    """Train a detector on the boxes of several readers.

    The detector (by default a small anchor-free CenterNet; --detector
    fcos for torchvision's FCOS) learns from every reader's boxes, their
    consensus, or the consensus with each box's loss weighted by the
    readers' agreement (EARL, Le et al. 2023). All images must have one
    size.

    MODEL_DIR gets the model (config.json, model.safetensors, data.json),
    history.csv, targets.csv, run.json and, with --predict DIR,
    predictions.csv (image,class,xmin,ymin,xmax,ymax,score).

    Example: crowdmed train detect --boxes readers.csv --images imgs/
    --variant earl --out detector/ --predict new_imgs/
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.pipelines.detect import train_detection

        names = [*MODEL_FILES, "data.json", "history.csv", "targets.csv", "run.json"]
        if predict is not None:
            names.append("predictions.csv")
        _check_outputs(
            [p for p in (boxes, checkpoint) if p is not None and p.is_file()],
            {f"--out {name}": out / name for name in names},
        )
        with _reporter(console, f"Reading {boxes.name}") as report:
            run = train_detection(**ctx.params, progress=report)
            report(description="Writing outputs")
            save_model_folder(
                ctx,
                run,
                out,
                seed=seed,
                task="detection",
                params=run_params(ctx),
                config=run.config,
                inputs=run.inputs,
                fit=run.fit,
            )
    last = run.trainer.history_[-1]
    c = run.config
    console.print(
        f"Trained {c['detector']} ({c['variant']}) on {c['n_images']:,} images, {c['n_targets']:,} "
        f"boxes, {len(c['classes'])} classes: final loss {last['loss']:.3f}; model in "
        f"{escape(str(out))}"
    )
