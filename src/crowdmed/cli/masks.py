"""Commands of the mask consensus and segmentation workflow (``crowdmed masks ...``)."""

from __future__ import annotations

import json
import time
import warnings
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.markup import escape

from crowdmed._io import to_jsonable
from crowdmed._validation import check_option
from crowdmed._version import __version__
from crowdmed.cli._common import (
    _check_outputs,
    _environment,
    _one_line,
    _progress,
    _sha256,
    _staged_outputs,
    _stderr,
    _step,
    _user_errors,
)

__all__ = ["ConsensusMethod", "register"]

masks_app = typer.Typer(
    name="masks",
    help="Consensus of several raters' segmentation masks (STAPLE, voting, soft masks).",
    no_args_is_help=True,
)


class ConsensusMethod(str, Enum):
    """Consensus methods of ``crowdmed masks consensus``."""

    STAPLE = "staple"
    MULTILABEL_STAPLE = "multilabel-staple"
    MAJORITY = "majority"
    MEAN = "mean"


@masks_app.command("consensus")
def consensus(
    ctx: typer.Context,
    rater_files: Annotated[
        list[Path],
        typer.Argument(
            help="One mask per rater, all on the same grid: .npy/.npz, .png/.gif/.tif, or "
            ".nii.gz/.nrrd/.mha (these need the medical extra: SimpleITK).",
            show_default=False,
            metavar="RATER_FILES...",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Consensus mask (.npy, .npz, .png, .nii.gz, .nrrd, .mha ...). Medical formats "
            "copy the geometry of the first rater file.",
        ),
    ],
    method: Annotated[
        str,
        typer.Option("--method", "-m", help="staple, multilabel-staple, majority or mean."),
    ] = ConsensusMethod.STAPLE.value,
    soft: Annotated[
        bool,
        typer.Option(
            "--soft",
            help="Write the foreground probability (staple, mean) instead of the hard mask; "
            "needs a float format (.npy, .npz, .nii.gz ...).",
        ),
    ] = False,
    raters_out: Annotated[
        Path | None,
        typer.Option(
            "--raters-out",
            "-r",
            help="Also write one row per rater (CSV): the rater's figures and Dice against "
            "the consensus.",
            show_default=False,
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Run record (version, params, inputs, results); <out>.json when omitted.",
            show_default=False,
        ),
    ] = None,
    max_iter: Annotated[
        int, typer.Option("--max-iter", help="Maximum EM iterations (STAPLE methods).")
    ] = 1000,
    tol: Annotated[
        float | None,
        typer.Option(
            "--tol",
            help="EM tolerance on the rater figures (1e-7 for staple, 1e-5 for "
            "multilabel-staple when omitted).",
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option("--threshold", help="staple and mean: foreground where p >= threshold."),
    ] = 0.5,
    undecided: Annotated[
        int,
        typer.Option(
            "--undecided",
            help="multilabel-staple: label of voxels where the top classes tie.",
        ),
    ] = -1,
) -> None:
    """Fuse several raters' masks of one image or volume into a consensus.

    Example: crowdmed masks consensus r1.nii.gz r2.nii.gz r3.nii.gz -m staple -o staple.nii.gz
    -r raters.csv
    """
    started = time.perf_counter()
    console = _stderr()
    with _user_errors(ctx):
        m = check_option(method, ConsensusMethod, "--method")
        if len(rater_files) < 2:
            raise ValueError(
                f"Consensus needs the masks of at least 2 raters; got {len(rater_files)} file."
            )
        if soft and m in (ConsensusMethod.MAJORITY, ConsensusMethod.MULTILABEL_STAPLE):
            raise ValueError(f"`--soft` applies to staple and mean only; got --method {m.value}.")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"`--threshold` must be in [0, 1]; got {threshold}.")
        json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
        outputs = {"--out": out}
        if raters_out is not None:
            outputs["--raters-out"] = raters_out
        outputs["--json"] = json_out
        _check_outputs(rater_files, outputs)
        from crowdmed.data.masks import check_mask_output

        check_mask_output(out, what="`--out`", soft=soft)

        from crowdmed.aggregation.segmentation.staple import STAPLE, MultiLabelSTAPLE
        from crowdmed.aggregation.segmentation.votes import majority_vote_masks, mean_masks
        from crowdmed.data.masks import binarize, check_same_grid, read_mask, write_mask
        from crowdmed.metrics.segmentation import dice

        caught: list[warnings.WarningMessage] = []
        with _progress(console) as progress:
            with _step(progress, f"Reading {len(rater_files)} masks"):
                files = [read_mask(p) for p in rater_files]
                shapes = [f.array.shape for f in files]
                for i, shape in enumerate(shapes):
                    if shape != shapes[0]:
                        raise ValueError(
                            f"Rater {i} ('{rater_files[i]}') has shape {shape} but rater 0 "
                            f"('{rater_files[0]}') has shape {shapes[0]}; all masks must share "
                            "one grid."
                        )
                check_same_grid(files, [f"Rater {i} ('{p}')" for i, p in enumerate(rater_files)])
            params: dict[str, Any] = {}
            fit: dict[str, Any] = {}
            rows: dict[str, Any] = {"rater": list(range(len(files))), "file": rater_files}
            with (
                _step(progress, f"Computing the {m.value} consensus"),
                warnings.catch_warnings(record=True) as caught,
            ):
                warnings.simplefilter("always")
                if m is ConsensusMethod.MULTILABEL_STAPLE:
                    stack = np.stack([f.array for f in files])
                    est = MultiLabelSTAPLE(
                        max_iter=max_iter, tol=1e-5 if tol is None else tol, undecided=undecided
                    )
                    est.fit(stack)
                    params = est.get_params()
                    result = est.labels_
                    fit = {
                        "n_iter": est.n_iter_,
                        "converged": est.converged_,
                        "n_classes": est.n_classes_,
                        "prior": est.prior_,
                        "log_likelihood": est.log_likelihoods_[-1]
                        if est.log_likelihoods_
                        else None,
                    }
                    for k in range(est.n_classes_):
                        rows[f"sensitivity_{k}"] = est.sensitivity_[:, k]
                    consensus_bin = None
                else:
                    stack = np.stack(
                        [
                            binarize(f.array, f"Rater {i} ('{rater_files[i]}')")
                            for i, f in enumerate(files)
                        ]
                    )
                    if m is ConsensusMethod.STAPLE:
                        st = STAPLE(
                            max_iter=max_iter, tol=1e-7 if tol is None else tol, threshold=threshold
                        )
                        st.fit(stack)
                        params = st.get_params()
                        result = st.posteriors_ if soft else st.labels_
                        consensus_bin = st.labels_
                        rows["sensitivity"] = st.sensitivity_
                        rows["specificity"] = st.specificity_
                        fit = {
                            "n_iter": st.n_iter_,
                            "converged": st.converged_,
                            "prior": st.prior_,
                            "log_likelihood": st.log_likelihoods_[-1]
                            if st.log_likelihoods_
                            else None,
                        }
                    elif m is ConsensusMethod.MEAN:
                        prob = mean_masks(stack)
                        params = {"threshold": threshold}
                        consensus_bin = prob >= threshold
                        result = prob if soft else consensus_bin
                    else:
                        consensus_bin = majority_vote_masks(stack)
                        params = {"ties": "background"}
                        result = consensus_bin
                    rows["foreground_voxels"] = stack.reshape(len(files), -1).sum(axis=1)
                    rows["dice_vs_consensus"] = [dice(s, consensus_bin) for s in stack]
            for w in caught:
                console.print(f"[yellow]Warning:[/] {escape(_one_line(w.message))}", soft_wrap=True)
            with _step(progress, "Writing outputs"):
                record: dict[str, Any] = {
                    "crowdmed_version": __version__,
                    "command": "masks consensus",
                    "arguments": ctx.params,
                    "method": m.value,
                    "params": params,
                    "inputs": [{"path": p.resolve(), "sha256": _sha256(p)} for p in rater_files],
                    "data": {"n_raters": len(files), "shape": shapes[0]},
                    "fit": {**fit, "warnings": [_one_line(w.message) for w in caught]},
                    "outputs": {
                        "consensus": out.resolve(),
                        "soft": soft,
                        "raters": None if raters_out is None else raters_out.resolve(),
                        "json": json_out.resolve(),
                    },
                    "environment": _environment(pandas=pd.__version__),
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                with _staged_outputs() as stage:
                    write_mask(stage(out), np.asarray(result), files[0].geometry)
                    if raters_out is not None:
                        pd.DataFrame(rows).to_csv(stage(raters_out), index=False)
                    record["elapsed_seconds"] = time.perf_counter() - started
                    stage(json_out).write_text(
                        json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8"
                    )
    console.print(f"Wrote the {m.value} consensus of {len(rater_files)} raters: {out}")


def register(app: typer.Typer) -> None:
    """Add this workflow's commands to the ``crowdmed`` application."""
    app.add_typer(masks_app, name="masks")
