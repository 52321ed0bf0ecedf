"""``crowdmed train segment``: a segmentation network trained on the masks of several raters.

A thin shell over :func:`crowdmed.pipelines.segment.train_segmentation`; the input layout is
described in :mod:`crowdmed.data.cases`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from crowdmed.cli._common import (
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
    ImagesOpt,
    LrOpt,
    ModelDirOpt,
    PatienceOpt,
    PredictOpt,
    ResumeOpt,
    SeedOpt,
    number_option,
)

if TYPE_CHECKING:
    from crowdmed.pipelines.segment import SegmentationRun

__all__ = ["segment"]

MasksOpt = Annotated[
    Path,
    typer.Option(
        "--masks",
        help="Folder with one sub-folder per rater, each holding that rater's masks named "
        "after the case id of the --images image (PNG/TIFF/NPY/NIfTI/NRRD/MHA label maps: "
        "0 background, 1..K-1 classes; 0/255 is binary). A rater may skip cases.",
        metavar="DIR",
        show_default=False,
    ),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        "-m",
        help="single (one --rater), consensus (majority vote), gaf (vote with the Gaussian "
        "attention focal loss), reweight or reweight-gaf (learned per-pixel rater weights), "
        "confusion-pixel or confusion-global (a confusion matrix per rater, per pixel or for "
        "the whole image, with the trace regulariser).",
    ),
]
RaterOpt = Annotated[
    str | None,
    typer.Option(
        "--rater",
        help="The rater (a --masks sub-folder) learnt from with --method single.",
        metavar="NAME",
        show_default=False,
    ),
]
ValImagesOpt = Annotated[
    Path | None,
    typer.Option(
        "--val-images", help="Folder of validation images.", metavar="DIR", show_default=False
    ),
]
ValMasksOpt = Annotated[
    Path | None,
    typer.Option(
        "--val-masks",
        help="Reference masks of the --val-images cases, named by case id; drive early "
        "stopping by the validation Dice.",
        metavar="DIR",
        show_default=False,
    ),
]
UnetChannelsOpt = Annotated[
    str | None,
    typer.Option(
        "--unet-channels",
        help="Feature channels of the U-Net levels, comma-separated [default: 16,32,64; "
        "basic-unet: six numbers].",
        show_default=False,
    ),
]
BackboneOpt = Annotated[
    str,
    typer.Option(
        "--backbone",
        help="unet (MONAI UNet), basic-unet (MONAI BasicUNet), deeplabv3-mobilenet or "
        "deeplabv3-resnet50 (torchvision DeepLabV3, untrained: nothing is downloaded; 2-D).",
        metavar="NAME",
    ),
]


def _k_every(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> Any:
    """Parse ``--k-every`` while the command line is parsed (one error line, exit code 2)."""
    if value is None or ctx.resilient_parsing:
        return value
    from crowdmed.pipelines.segment import parse_k_every

    try:
        return parse_k_every(value)
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None


KEveryOpt = Annotated[
    str,
    typer.Option(
        "--k-every",
        help="Reweight methods: the re-weighting step k grows by one every this share of "
        "the run, a fraction in (0, 1] of the planned optimiser steps (0.1: every 1,000 of "
        "10,000 iterations, as in Xiao et al.), or every this many steps when a whole "
        "number (1 to 10000000).",
        metavar="FRACTION|STEPS",
        callback=_k_every,
    ),
]
FocalAlphaOpt = Annotated[
    float | None,
    number_option(
        "--focal-alpha",
        help="GAF methods: class-balance factor α of the focal loss (α for the foreground "
        "classes, 1 - α for the background) [default: none, α_t = 1]",
        lo=0,
        hi=1,
        show_default=False,
    ),
]
TraceWeightOpt = Annotated[
    float,
    number_option(
        "--trace-weight",
        help="Confusion methods: weight λ of the trace regulariser, the mean trace of the "
        "raters' confusion matrices added to the loss (Zhang et al. 2020); keep it small: a "
        "large one can make the segmentation nearly all foreground",
        lo=0,
        hi=100,
    ),
]


AugmentOpt = Annotated[
    bool,
    typer.Option(
        "--augment/--no-augment",
        help="Train on randomly flipped and 90°-rotated batches (images and masks together, "
        "seeded); for images without a preferred orientation.",
    ),
]


def segment(
    ctx: typer.Context,
    images: ImagesOpt,
    masks: MasksOpt,
    out: ModelDirOpt,
    method: MethodOpt = "reweight-gaf",
    rater: RaterOpt = None,
    val_images: ValImagesOpt = None,
    val_masks: ValMasksOpt = None,
    backbone: BackboneOpt = "unet",
    unet_channels: UnetChannelsOpt = None,
    k_every: KEveryOpt = "0.1",
    focal_alpha: FocalAlphaOpt = None,
    trace_weight: TraceWeightOpt = 0.01,
    epochs: EpochsOpt = 30,
    batch_size: BatchSizeOpt = 8,
    lr: LrOpt = 1e-3,
    patience: PatienceOpt = 10,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    channels: ChannelsOpt = None,
    predict: PredictOpt = None,
    resume: ResumeOpt = True,
    augment: AugmentOpt = False,
) -> None:
    """Train a segmentation network on the masks of several raters.

    --images holds one 2-D image (PNG/TIFF/JPEG) or one 3-D volume
    (NIfTI, NRRD, MHA) per case, named <case>.png or <case>.nii.gz;
    --masks one sub-folder per rater with that rater's masks of some or
    all cases (<rater>/<case>.png; label maps, 0 = background).

    MODEL_DIR gets the model (config.json, model.safetensors, data.json),
    history.csv, raters.csv, run.json, checkpoint/ and, with --predict
    DIR, predictions/ (label maps) and predictions.csv.

    Example: crowdmed train segment --images imgs/ --masks masks/
    --method reweight-gaf --out unet/ --predict new_imgs/
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.pipelines.segment import parse_channels, train_segmentation

        levels = None if unet_channels is None else parse_channels(unet_channels)
        with _reporter(console, "Reading the cases") as report:
            args = {**ctx.params, "unet_channels": levels}
            run = train_segmentation(**args, progress=report)
            report(description="Writing outputs")
            save_model_folder(
                ctx,
                run,
                out,
                seed=seed,
                task="segmentation",
                params=run_params(ctx),
                config=run.config,
                inputs=run.inputs,
                fit=run.fit,
            )
    run.remove_stale(out)
    _print_summary(console, run, out)


def _print_summary(console: Console, run: SegmentationRun, out: Path) -> None:
    seg, c = run.segmenter, run.config
    last = seg.history_[-1]
    dice_text = f", validation Dice {last['val_dice']:.3f}" if "val_dice" in last else ""
    resumed_text = ""
    if run.fit["resumed_from_epoch"] is not None:
        resumed_text = f" (resumed after epoch {run.fit['resumed_from_epoch']}"
        if not run.new_epochs:
            resumed_text += ", which had stopped early" if seg.stopped_early_ else ", finished"
        resumed_text += ")"
    kind = "volumes" if c["spatial_dims"] == 3 else "images"
    console.print(
        f"Trained a {c['backbone']} ({c['method']}) on {c['n_images']:,} {kind} with "
        f"{c['n_masks']:,} masks of {len(c['raters'])} rater(s), {c['n_classes']} classes"
        f"{resumed_text}: final loss {last['loss']:.3f}{dice_text}; model in "
        f"{escape(str(out))}"
    )
