"""Ordinal and continuous truth inference: simulated readers, VLDB'17 Emotion, LIDC malignancy.

Four parts, library functions only:

* **Simulated ordinal readers** (``crowdmed.simulate.simulate_ordinal_readers``): 300 items,
  8 readers, K = 5, severity offsets in {-1, -0.5, 0, 0.5, 1}, noise 0.8-1.6, every reader
  reads every item; a sparse variant (3 of the 8 readers per item, 600 items); and K = 10
  with only grades 2-5 occurring (4 readers). Exact and within-one accuracy of majority vote,
  ordinal majority vote, median, Dawid–Skene and the graded-response model (free and fixed
  class locations, learned and uniform class prior), and how well the model recovers the
  offsets and noise scales; mean ± sd over ``--seeds`` seeds.
* **Simulated continuous readers** (``simulate_continuous_readers``): 300 items, 8 readers
  with biases in {-1..1}, precisions 0.2-4 and, in a second setting, scales 0.6-1.4. MAE and
  RMSE of mean, median, Raykar (precision only), Raykar (bias and precision) and
  scale-and-bias; recovery of bias, precision and scale.
* **VLDB'17 Emotion** (``$CROWDMED_DATA/truth_inference_vldb17``, Zheng et al. 2017): 700
  numeric questions, 38 workers, 10 answers each, gold for every question. MAE and RMSE of the
  same five methods.
* **LIDC-IDRI malignancy** (bundled ``lidc_malignancy``, 1,866 nodules, 2-4 ratings 1-5,
  no gold): the graded-response model's offsets, noise, thresholds and class locations (with
  a uniform class prior), with a bootstrap over nodules, and how its consensus differs from
  the median.

Usage::

    python benchmarks/ordinal_continuous.py [--seeds 10] [--bootstrap 50] [--quick]

Writes the ``ordinal_continuous`` section of ``BENCHMARKS.md`` and
``benchmarks/results/ordinal_continuous.json``; ``--quick`` (2 seeds, 5 resamples) only
prints. Runs in about a minute on one core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, machine_line, update_section, write_json
from crowdmed.aggregation import DawidSkene, MajorityVote
from crowdmed.aggregation.continuous import (
    ContinuousMean,
    ContinuousMedian,
    RaykarRegression,
    ScaleBiasRegression,
)
from crowdmed.aggregation.ordinal import (
    GradedResponse,
    MedianVote,
    OrdinalMajorityVote,
    item_medians,
)
from crowdmed.data import CrowdLabels, load_dataset, load_vldb17_table
from crowdmed.data.vldb17 import VLDB17_FOLDER
from crowdmed.exceptions import ConvergenceWarning
from crowdmed.simulate import simulate_continuous_readers, simulate_ordinal_readers

OFFSETS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, -1.0, 0.5, 0.0])
NOISE = np.array([1.0, 1.5, 1.2, 0.8, 1.4, 1.0, 1.6, 1.1])
BIAS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, -1.0, 0.5, 0.0])
PRECISION = np.array([4.0, 1.0, 0.25, 2.0, 1.0, 0.5, 4.0, 0.2])
SCALE = np.array([1.0, 0.8, 1.2, 1.0, 0.6, 1.4, 1.0, 1.0])

ORDINAL: dict[str, Callable[[], Any]] = {
    "majority vote": MajorityVote,
    "ordinal majority vote": OrdinalMajorityVote,
    "median": MedianVote,
    "Dawid–Skene": DawidSkene,
    "graded response (free locations)": GradedResponse,
    "graded response (fixed locations)": lambda: GradedResponse(locations="fixed"),
    "graded response (uniform class prior)": lambda: GradedResponse(class_prior="uniform"),
}
#: Third ordinal setting: K = 10 grades of which only 2-5 occur, 4 readers.
OFFSETS_10 = np.array([-0.5, 0.0, 0.5, 0.2])
NOISE_10 = np.array([0.7, 0.7, 0.7, 0.7])
PRIORS_10 = np.array([0, 0, 1, 1, 1, 1, 0, 0, 0, 0]) / 4
CONTINUOUS: dict[str, Callable[[], Any]] = {
    "mean": ContinuousMean,
    "median": ContinuousMedian,
    "Raykar, precision only": lambda: RaykarRegression(bias=False),
    "Raykar, bias + precision": RaykarRegression,
    "scale + bias + precision": ScaleBiasRegression,
}


def _timed(make: Callable[[], Any], labels: Any) -> tuple[Any, float]:
    est = make()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(labels)
    return est, time.perf_counter() - t0


def _ms(values: list[float], digits: int = 3) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.{digits}f}"


# ----------------------------------------------------------------------------- ordinal
def bench_ordinal(
    seeds: int,
    n_items: int,
    labels_per_item: int | None,
    offsets: np.ndarray = OFFSETS,
    noise: np.ndarray = NOISE,
    priors: np.ndarray | None = None,
) -> dict[str, Any]:
    n_classes = 5 if priors is None else priors.size
    rows: dict[str, dict[str, list[float]]] = {
        name: {"exact": [], "within_one": [], "seconds": []} for name in ORDINAL
    }
    recovery: dict[str, dict[str, list[float]]] = {
        name: {"offset_corr": [], "offset_max_err": [], "noise_max_rel_err": []}
        for name in ORDINAL
        if name.startswith("graded")
    }
    for seed in range(seeds):
        sim = simulate_ordinal_readers(
            n_items, offsets, noise, n_classes=n_classes, priors=priors,
            labels_per_item=labels_per_item, random_state=seed,
        )  # fmt: skip
        for name, make in ORDINAL.items():
            est, sec = _timed(make, CrowdLabels.from_dense(sim.labels, n_classes=n_classes))
            rows[name]["exact"].append(float((est.labels_ == sim.truth).mean()))
            rows[name]["within_one"].append(float((np.abs(est.labels_ - sim.truth) <= 1).mean()))
            rows[name]["seconds"].append(sec)
            if name in recovery:
                truth = offsets - offsets.mean()
                rec = recovery[name]
                rec["offset_corr"].append(float(np.corrcoef(est.offsets_, truth)[0, 1]))
                rec["offset_max_err"].append(float(np.abs(est.offsets_ - truth).max()))
                rec["noise_max_rel_err"].append(float(np.abs(est.noise_ / noise - 1).max()))
    return {
        "n_items": n_items,
        "n_classes": n_classes,
        "offsets": offsets,
        "noise": noise,
        "labels_per_item": labels_per_item or len(offsets),
        "rows": rows,
        "recovery": recovery,
    }


# ----------------------------------------------------------------------------- continuous
def _errors(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    err = pred - truth
    return float(np.abs(err).mean()), float(np.sqrt((err**2).mean()))


def bench_continuous(seeds: int, scale: np.ndarray | None) -> dict[str, Any]:
    rows: dict[str, dict[str, list[float]]] = {
        name: {"mae": [], "rmse": [], "seconds": []} for name in CONTINUOUS
    }
    recovery: dict[str, list[float]] = {
        "bias_max_err": [], "precision_max_rel_err": [], "scale_max_err": []
    }  # fmt: skip
    model = "scale + bias + precision" if scale is not None else "Raykar, bias + precision"
    for seed in range(seeds):
        sim = simulate_continuous_readers(300, BIAS, PRECISION, scale=scale, random_state=seed)
        for name, make in CONTINUOUS.items():
            est, sec = _timed(make, sim.values)
            mae, rmse = _errors(est.labels_, sim.truth)
            rows[name]["mae"].append(mae)
            rows[name]["rmse"].append(rmse)
            rows[name]["seconds"].append(sec)
            if name == model:
                recovery["bias_max_err"].append(
                    float(np.abs(est.bias_ - (BIAS - BIAS.mean())).max())
                )
                recovery["precision_max_rel_err"].append(
                    float(np.abs(est.precision_ / PRECISION - 1).max())
                )
                if scale is not None:
                    recovery["scale_max_err"].append(
                        float(np.abs(est.scale_ - scale / scale.mean()).max())
                    )
    return {"scale": None if scale is None else scale, "model": model, "rows": rows,
            "recovery": recovery}  # fmt: skip


def bench_emotion(root: Path) -> dict[str, Any]:
    answers, truth = load_vldb17_table("emotion", root / VLDB17_FOLDER)
    out: dict[str, Any] = {
        "n_items": int(answers["item"].nunique()),
        "n_workers": int(answers["annotator"].nunique()),
        "n_answers": len(answers),
        "rows": {},
    }
    for name, make in CONTINUOUS.items():
        est, sec = _timed(make, answers)
        mae, rmse = _errors(est.labels_, truth.loc[est.item_ids_].to_numpy(dtype=float))
        out["rows"][name] = {
            "mae": mae, "rmse": rmse, "seconds": sec, "n_iter": est.n_iter_,
            "converged": bool(est.converged_),
        }  # fmt: skip
    rr = RaykarRegression().fit(answers)
    out["raykar_bias_range"] = [float(rr.bias_.min()), float(rr.bias_.max())]
    sd = 1 / np.sqrt(rr.precision_)
    out["raykar_noise_sd_range"] = [float(sd.min()), float(sd.max())]
    values = answers["label"].to_numpy(dtype=float)
    per_worker = answers.groupby("annotator").size()
    item_idx = pd.Index(rr.item_ids_).get_indexer(answers["item"])
    worker_idx = pd.Index(rr.annotator_ids_).get_indexer(answers["annotator"])
    resid = values - rr.labels_[item_idx] - rr.bias_[worker_idx]
    out["share_zero"] = float((values == 0).mean())
    out["share_extreme"] = float((np.abs(values) == 100).mean())
    out["median_answers_per_worker"] = float(per_worker.median())
    out["median_bias_se"] = float(np.median(sd / np.sqrt(per_worker.loc[rr.annotator_ids_])))
    out["residual_excess_kurtosis"] = float(stats.kurtosis(resid))
    return out


# ----------------------------------------------------------------------------- LIDC
def _resample(cl: CrowdLabels, rng: np.random.Generator) -> CrowdLabels:
    """Nodules drawn with replacement (a drawn nodule keeps all its ratings)."""
    pick = rng.integers(0, cl.n_items, cl.n_items)
    order = np.argsort(cl.items, kind="stable")
    starts = np.concatenate([[0], np.cumsum(cl.labels_per_item())])
    idx = np.concatenate([order[starts[i] : starts[i + 1]] for i in pick])
    new_item = np.repeat(np.arange(cl.n_items), cl.labels_per_item()[pick])
    return CrowdLabels.from_triplets(
        new_item, cl.annotators[idx], cl.labels[idx], n_items=cl.n_items,
        n_annotators=cl.n_annotators, n_classes=cl.n_classes,
        annotator_ids=cl.annotator_ids, classes=cl.classes,
    )  # fmt: skip


def bench_lidc(n_boot: int) -> dict[str, Any]:
    cl = load_dataset("lidc_malignancy")

    def chosen() -> GradedResponse:
        return GradedResponse(locations="fixed", class_prior="uniform")

    gr, sec = _timed(chosen, cl)
    learned = _timed(GradedResponse, cl)[0]
    free_uniform = _timed(lambda: GradedResponse(class_prior="uniform"), cl)[0]
    med = MedianVote().fit(cl).labels_
    med_lo, med_hi = item_medians(cl)
    mode = OrdinalMajorityVote().fit(cl).labels_
    ds = _timed(DawidSkene, cl)[0].labels_
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(n_boot):
        est, _ = _timed(chosen, _resample(cl, rng))
        boot.append(est.offsets_)
    boot_arr = np.array(boot)
    lo, hi = np.percentile(boot_arr, [2.5, 97.5], axis=0)
    classes = [int(c) for c in cl.classes]
    diff = gr.labels_ - med
    cross = pd.crosstab(
        pd.Series(np.asarray(cl.classes)[med], name="median"),
        pd.Series(np.asarray(cl.classes)[gr.labels_], name="graded response"),
    ).reindex(index=classes, columns=classes, fill_value=0)
    return {
        "n_items": cl.n_items,
        "n_labels": cl.n_labels,
        "readers": [str(a) for a in cl.annotator_ids],
        "labels_per_reader": cl.labels_per_annotator(),
        "seconds": sec,
        "n_iter": gr.n_iter_,
        "converged": bool(gr.converged_),
        "offsets": gr.offsets_,
        "offsets_learned_prior": learned.offsets_,
        "priors_learned": learned.priors_,
        "offsets_ci": [lo, hi],
        "noise": gr.noise_,
        "thresholds": gr.thresholds_,
        "locations_free": free_uniform.locations_,
        "priors": gr.priors_,
        "classes": classes,
        "shift_vs_median": {int(d): int((diff == d).sum()) for d in range(-4, 5)},
        "agree_median": float((diff == 0).mean()),
        "up_to_upper_middle": int(((diff > 0) & (gr.labels_ == med_hi) & (med_hi > med_lo)).sum()),
        "n_split_medians": int((med_hi > med_lo).sum()),
        "agree_mode": float((gr.labels_ == mode).mean()),
        "agree_ds": float((gr.labels_ == ds).mean()),
        "median_vs_mode": float((med == mode).mean()),
        "class_counts": {
            "median": np.bincount(med, minlength=5).tolist(),
            "graded response": np.bincount(gr.labels_, minlength=5).tolist(),
            "graded response, learned prior": np.bincount(learned.labels_, minlength=5).tolist(),
            "Dawid–Skene": np.bincount(ds, minlength=5).tolist(),
            "graded response, free locations": np.bincount(
                free_uniform.labels_, minlength=5
            ).tolist(),
        },
        "crosstab": cross.to_numpy(),
        "mean_posterior_max": float(gr.posteriors_.max(axis=1).mean()),
        "bootstrap": n_boot,
    }


# ----------------------------------------------------------------------------- report
def markdown(res: dict[str, Any]) -> str:
    n_seeds = res["args"]["seeds"]
    lines = [
        "## Ordinal and continuous truth inference",
        "",
        "`python benchmarks/ordinal_continuous.py` (this section is written by the script). "
        "Graded response = `crowdmed.aggregation.ordinal.GradedResponse` (cumulative probit "
        "link, per-reader severity offset and noise, ordered class locations with thresholds "
        "half-way between them, EM); Raykar = "
        "`crowdmed.aggregation.continuous.RaykarRegression`; scale + bias = "
        "`ScaleBiasRegression`. Default options unless a row or paragraph names them.",
        "",
    ]
    for key, title in (("ordinal_dense", "every reader reads every item"),
                       ("ordinal_sparse", "3 of the 8 readers per item"),
                       ("ordinal_unused", "only grades 2-5 occur")):  # fmt: skip
        part = res[key]
        n_readers = len(part["offsets"])
        lines += [
            f"### Simulated ordinal readers: {part['n_items']} items, {n_readers} readers, "
            f"K = {part['n_classes']}, {title}",
            "",
            f"Offsets {np.asarray(part['offsets']).tolist()}, noise "
            f"{np.asarray(part['noise']).tolist()} (latent units; a class is 1 unit wide); "
            f"true classes uniform over the grades that occur. Mean ± sd over {n_seeds} seeds.",
            "",
            "| method | exact accuracy | within-one accuracy | fit (s) |",
            "|---|---:|---:|---:|",
        ]
        for name, row in part["rows"].items():
            lines.append(
                f"| {name} | {_ms(row['exact'])} | {_ms(row['within_one'])} | "
                f"{np.median(row['seconds']):.3f} |"
            )
        lines += ["", "| model | offset correlation | largest offset error | "
                  "largest noise error |", "|---|---:|---:|---:|"]  # fmt: skip
        for name, rec in part["recovery"].items():
            lines.append(
                f"| {name} | {_ms(rec['offset_corr'])} | {_ms(rec['offset_max_err'])} | "
                f"{_ms([100 * v for v in rec['noise_max_rel_err']], 1)} % |"
            )
        lines.append("")
    for key, title in (("continuous", "bias and precision"),
                       ("continuous_scale", "scale, bias and precision")):  # fmt: skip
        part = res[key]
        lines += [
            f"### Simulated continuous readers ({title}): 300 items, 8 readers",
            "",
            f"Truth N(0, 1); biases {BIAS.tolist()}, precisions {PRECISION.tolist()}"
            + (f", scales {SCALE.tolist()}" if part["scale"] is not None else "")
            + f". Mean ± sd over {n_seeds} seeds.",
            "",
            "| method | MAE | RMSE | fit (s) |",
            "|---|---:|---:|---:|",
        ]
        for name, row in part["rows"].items():
            lines.append(
                f"| {name} | {_ms(row['mae'])} | {_ms(row['rmse'])} | "
                f"{np.median(row['seconds']):.3f} |"
            )
        rec = part["recovery"]
        text = (
            f"{part['model']}: largest bias error {_ms(rec['bias_max_err'])}, largest relative "
            f"precision error {_ms([100 * v for v in rec['precision_max_rel_err']], 1)} %"
        )
        if rec["scale_max_err"]:
            text += f", largest scale error {_ms(rec['scale_max_err'])}"
        lines += ["", text + ".", ""]
    emo = res.get("emotion")
    lines += ["### VLDB'17 Emotion (numeric answers, gold for every question)", ""]
    if emo is None:
        lines += [f"Not run: `{VLDB17_FOLDER}` was not found under `CROWDMED_DATA`.", ""]
    else:
        lines += [
            f"{emo['n_items']} questions, {emo['n_workers']} workers, {emo['n_answers']:,} "
            "answers on −100..100 (Zheng et al., PVLDB 10(5) 2017, data from their repository).",
            "",
            "| method | MAE | RMSE | iterations | fit (s) |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in emo["rows"].items():
            lines.append(
                f"| {name} | {row['mae']:.3f} | {row['rmse']:.3f} | {row['n_iter']} | "
                f"{row['seconds']:.3f} |"
            )
        b0, b1 = emo["raykar_bias_range"]
        s0, s1 = emo["raykar_noise_sd_range"]
        best = min(emo["rows"], key=lambda n: emo["rows"][n]["mae"])
        lines += [
            "",
            f"Lowest MAE: {best}. Raykar's estimated worker biases span {b0:.1f} to {b1:.1f} "
            f"and noise SDs {s0:.1f} to {s1:.1f} points. A worker answered "
            f"{emo['median_answers_per_worker']:.0f} questions (median), so a bias has a "
            f"standard error of about {emo['median_bias_se']:.1f} points (median); "
            f"{100 * emo['share_zero']:.0f} % of the answers are exactly 0 and "
            f"{100 * emo['share_extreme']:.1f} % are ±100, and the residuals of the Raykar fit "
            f"have an excess kurtosis of {emo['residual_excess_kurtosis']:.1f} where the "
            "models assume Gaussian noise (0).",
            "",
            "The survey's own MAE/RMSE figures for this dataset are not reproduced here: its "
            "results table is not among the project's stored papers (`../shared/papers`) nor "
            "in the data folder's README, so no comparison with the published numbers is "
            "made.",
            "",
        ]
    lidc = res["lidc"]
    readers = lidc["readers"]
    lo, hi = lidc["offsets_ci"]
    lines += [
        "### LIDC-IDRI malignancy ratings (no gold)",
        "",
        f"{lidc['n_items']:,} nodules, {lidc['n_labels']:,} ratings 1–5 by 2–4 radiologists. "
        "Graded response with equally spaced grades and a uniform class prior "
        '(`GradedResponse(locations="fixed", class_prior="uniform")`): '
        f"{lidc['n_iter']} EM iterations, {lidc['seconds']:.2f} s. "
        "`R1`..`R4` are reading slots within a nodule, not people (LIDC reader identity is "
        "not kept across scans), so the offsets below measure slot effects: a real reader "
        "panel would give each radiologist's severity.",
        "",
        "| slot | ratings | severity offset (grades) | 95 % bootstrap interval | noise | "
        "offset, learned prior |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(readers):
        lines.append(
            f"| {r} | {lidc['labels_per_reader'][i]:,} | {lidc['offsets'][i]:+.3f} | "
            f"[{lo[i]:+.3f}, {hi[i]:+.3f}] | {lidc['noise'][i]:.3f} | "
            f"{lidc['offsets_learned_prior'][i]:+.3f} |"
        )
    classes = lidc["classes"]
    loc = ", ".join(f"{c}: {v:.2f}" for c, v in zip(classes, lidc["locations_free"], strict=True))
    pri = ", ".join(f"{c}: {v:.3f}" for c, v in zip(classes, lidc["priors_learned"], strict=True))
    lines += [
        "",
        f"Bootstrap: {lidc['bootstrap']} resamples of the nodules. Why these options: with "
        "2-4 exchangeable reading slots per nodule the data do not pin down the spacing of "
        f'the grades (estimated locations, `locations="free"`: {loc}), and the learned '
        f"class prior (the default) is {pri}: with readers' noise near one grade it draws "
        "most ambiguous nodules to grade 3.",
        "",
        "Consensus against the median (lower middle rating on even splits):",
        "",
        "| median \\ graded response | " + " | ".join(str(c) for c in classes) + " |",
        "|---|" + "---:|" * len(classes),
    ]
    for c, row in zip(classes, lidc["crosstab"], strict=True):
        lines.append(f"| {c} | " + " | ".join(f"{int(v):,}" for v in row) + " |")
    shifts = {int(k): v for k, v in lidc["shift_vs_median"].items() if v}
    counts = lidc["class_counts"]
    lines += [
        "",
        f"Graded response − median (grades): {shifts}; {lidc['up_to_upper_middle']} of the "
        "upward moves go to the upper middle rating of a nodule whose two middle ratings "
        f"differ ({lidc['n_split_medians']} such nodules). Same class as the median for "
        f"{100 * lidc['agree_median']:.1f} % of nodules, as the ordinal majority vote for "
        f"{100 * lidc['agree_mode']:.1f} %, as Dawid–Skene for "
        f"{100 * lidc['agree_ds']:.1f} % (median vs ordinal majority vote: "
        f"{100 * lidc['median_vs_mode']:.1f} %). Nodules per class (1..5): median "
        f"{counts['median']}, graded response {counts['graded response']}, "
        f"Dawid–Skene {counts['Dawid–Skene']}; graded response with defaults (free "
        f"locations, learned prior) {counts['graded response, learned prior']}, with free "
        f"locations and a uniform prior {counts['graded response, free locations']}. Mean "
        f"largest posterior {lidc['mean_posterior_max']:.3f}.",
        "",
        machine_line() + ", BLAS limited to one thread.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.bootstrap = 2, 5
    root = Path(os.environ.get("CROWDMED_DATA", REPO.parent / "shared" / "data"))
    res: dict[str, Any] = {"args": vars(args), "machine": machine_line()}
    t0 = time.perf_counter()
    with threadpool_limits(1):
        res["ordinal_dense"] = bench_ordinal(args.seeds, 300, None)
        res["ordinal_sparse"] = bench_ordinal(args.seeds, 600, 3)
        res["ordinal_unused"] = bench_ordinal(
            args.seeds, 200, None, OFFSETS_10, NOISE_10, PRIORS_10
        )
        res["continuous"] = bench_continuous(args.seeds, None)
        res["continuous_scale"] = bench_continuous(args.seeds, SCALE)
        res["emotion"] = bench_emotion(root) if (root / VLDB17_FOLDER).is_dir() else None
        res["lidc"] = bench_lidc(args.bootstrap)
    res["seconds"] = time.perf_counter() - t0
    md = markdown(res)
    print(md)
    if not args.quick:
        write_json("benchmarks/results/ordinal_continuous.json", res)
        update_section("ordinal_continuous", md)


if __name__ == "__main__":
    main()
