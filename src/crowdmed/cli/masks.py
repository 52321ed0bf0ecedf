"""``crowdmed masks consensus``: a shell over :func:`crowdmed.pipelines.masks.mask_consensus`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape

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
from crowdmed.pipelines.masks import ConsensusMethod
from crowdmed.pipelines.records import file_record

__all__ = ["ConsensusMethod", "register"]

masks_app = typer.Typer(
    name="masks",
    help="Consensus of several raters' segmentation masks (STAPLE, voting, soft masks).",
    no_args_is_help=True,
)

RaterFilesArg = Annotated[
    list[Path],
    typer.Argument(
        help="One mask per rater, all on the same grid: .npy/.npz, .png/.gif/.tif, or "
        ".nii.gz/.nrrd/.mha (these need the medical extra: SimpleITK).",
        show_default=False,
        metavar="RATER_FILES...",
    ),
]
MaskOutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Consensus mask (.npy, .npz, .png, .nii.gz, .nrrd, .mha ...). Medical formats copy "
        "the geometry of the first rater file.",
    ),
]
MethodOpt = Annotated[
    str, typer.Option("--method", "-m", help="staple, multilabel-staple, majority or mean.")
]
SoftOpt = Annotated[
    bool,
    typer.Option(
        "--soft",
        help="Write the foreground probability (staple, mean) instead of the hard mask; needs "
        "a float format (.npy, .npz, .nii.gz ...).",
    ),
]
RatersOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--raters-out",
        "-r",
        help="Also write one row per rater (CSV): the rater's figures and Dice against the "
        "consensus.",
        show_default=False,
    ),
]
MaxIterOpt = Annotated[
    int,
    number_option(
        "--max-iter",
        help="Maximum EM iterations (STAPLE methods).",
        lo=0,
        hi=1_000_000,
        integer=True,
    ),
]
TolOpt = Annotated[
    float | None,
    number_option(
        "--tol",
        help="EM tolerance on the rater figures (1e-7 for staple, 1e-5 for multilabel-staple "
        "when omitted).",
        lo=0,
        hi=1,
        show_default=False,
    ),
]
ThresholdOpt = Annotated[
    float,
    number_option(
        "--threshold", help="staple and mean: foreground where p >= threshold.", lo=0, hi=1
    ),
]
UndecidedOpt = Annotated[
    int,
    number_option(
        "--undecided",
        help="multilabel-staple: label of voxels where the top classes tie.",
        lo=-(2**31),
        hi=2**31 - 1,
        integer=True,
    ),
]


@masks_app.command("consensus")
def consensus(
    ctx: typer.Context,
    rater_files: RaterFilesArg,
    out: MaskOutOpt,
    method: MethodOpt = ConsensusMethod.STAPLE.value,
    soft: SoftOpt = False,
    raters_out: RatersOutOpt = None,
    json_path: JsonOpt = None,
    max_iter: MaxIterOpt = 1000,
    tol: TolOpt = None,
    threshold: ThresholdOpt = 0.5,
    undecided: UndecidedOpt = -1,
) -> None:
    """Fuse several raters' masks of one image or volume into a consensus.

    Example: crowdmed masks consensus r1.nii.gz r2.nii.gz r3.nii.gz
    -m staple -o staple.nii.gz -r raters.csv
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.data.masks import check_mask_output, write_mask
        from crowdmed.pipelines.masks import mask_consensus

        json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
        outputs = {"--out": out}
        if raters_out is not None:
            outputs["--raters-out"] = raters_out
        outputs["--json"] = json_out
        _check_outputs(rater_files, outputs)
        check_mask_output(out, what="`--out`", soft=soft)
        with _reporter(console, f"Fusing {len(rater_files)} masks"):
            result = mask_consensus(
                rater_files,
                method,
                soft=soft,
                max_iter=max_iter,
                tol=tol,
                threshold=threshold,
                undecided=undecided,
            )
        for warning in result.fit["warnings"]:
            console.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True)
        record = run_record(
            ctx,
            method=result.method,
            params=result.params,
            inputs=[file_record(p) for p in rater_files],
            data={"n_raters": len(rater_files), "shape": result.shape},
            fit=result.fit,
            outputs={
                "consensus": out.resolve(),
                "soft": soft,
                "raters": None if raters_out is None else raters_out.resolve(),
                "json": json_out.resolve(),
            },
            versions={"pandas": pd.__version__},
        )
        with _staged_outputs() as stage:
            write_mask(stage(out), result.mask, result.geometry)
            if raters_out is not None:
                result.raters.to_csv(stage(raters_out), index=False)
            write_run_record(ctx, json_out, record, stage)
    console.print(f"Wrote the {result.method} consensus of {len(rater_files)} raters: {out}")


def register(app: typer.Typer) -> None:
    """Add this workflow's commands to the ``crowdmed`` application."""
    app.add_typer(masks_app, name="masks")
