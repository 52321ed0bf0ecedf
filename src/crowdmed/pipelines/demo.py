"""The crowdmed demo: every classification method on every bundled data set, one report.

:func:`run_demo` loads the bundled data sets (:mod:`crowdmed.data.datasets`), fits every
aggregator of :data:`crowdmed.aggregation.METHODS` on each, and writes into ``out_dir``
(each file atomically):

* ``results.json``: parameters, seed, crowdmed version, environment, timing and every table;
* ``accuracy.csv``: one row per (data set, method): accuracy against gold, fit time, status;
* ``annotators_<dataset>.csv``: :func:`~crowdmed.quality.annotator_table` of every annotator
  of each crowd data set under the Dawid–Skene consensus, least reliable first;
* ``lidc_consensus.csv``: per LIDC nodule, the ratings and the MV / DS / median /
  graded-response consensus;
* ``lidc_masks_nodules.csv`` and ``lidc_masks_readers.csv`` (part ``masks``): STAPLE
  consensus of four radiologists' 3-D masks of 100 LIDC nodules, per nodule and per reader;
* ``mitosis_metrics.csv``, ``mitosis_annotators.csv`` and ``mitosis_maps.npz`` (part
  ``mitosis``): the AggNet loop on synthetic high-power fields with a simulated crowd — F1
  and AUC of the unrefined, AM-MV, AM-GLAD, AM-GT and AggNet-refined networks, every
  worker's estimated spammer score against their quiz accuracy, and the detection maps;
* ``simulated_ordinal.csv`` and ``simulated_continuous.csv`` (part ``crowd``): every
  ordinal aggregator (with Dawid–Skene and majority vote as nominal baselines) and every
  continuous aggregator scored on simulated readers with known truth
  (:mod:`crowdmed.pipelines.demo_ordinal_continuous`);
* ``readers_vs_gold.csv``: every annotator of each binary crowd data set, and the
  majority-vote and Dawid–Skene consensus, against gold (sensitivity and specificity with
  95 % intervals);
* ``report.md`` and ``report.html`` (self-contained: tables and figures embedded), summary
  first (:mod:`crowdmed.pipelines.demo_report`).

It is what ``crowdmed demo`` runs; it takes about 30 s on two cores (the mitosis loop
trains small networks; the other parts take seconds).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._io import atomic_write, to_jsonable
from crowdmed._validation import check_option
from crowdmed._version import __version__
from crowdmed.aggregation import METHODS, BaseAggregator, GradedResponse, Method, make_aggregator
from crowdmed.data.datasets import dataset_info, list_datasets, load_dataset, load_lidc_table
from crowdmed.data.io import from_long_frame
from crowdmed.data.labels import CrowdLabels
from crowdmed.pipelines.demo_report import TITLE, DemoFigures, demo_figures, demo_sections
from crowdmed.quality import (
    annotator_table,
    fleiss_kappa,
    krippendorff_alpha,
    reader_operating_points,
)
from crowdmed.report.html import Image, render_html, render_markdown

__all__ = ["PARTS", "DemoResult", "ProgressCallback", "run_demo"]

#: Parts of the demo: ``crowd`` (truth inference on the bundled label sets), ``masks`` (STAPLE
#: on the bundled LIDC nodule masks), ``mitosis`` (the AggNet crowd loop on synthetic fields;
#: needs PyTorch, skipped with a note when it is missing and the part was not asked for).
PARTS = ("crowd", "masks", "mitosis")

#: ``progress(description, completed, total)``: called before each step with the number of
#: steps done so far, and once at the end with ``completed == total``. ``total`` is the same
#: in every call. With rich: ``lambda d, c, t: bar.update(task, description=d, completed=c,
#: total=t)``.
ProgressCallback = Callable[[str, int, int], None]

LIDC = "lidc_malignancy"
LIDC_RATINGS = ("malignancy", "subtlety", "spiculation")
LIDC_CAVEAT = (
    "LIDC-IDRI reader identity is not stable across scans (anonymised reading sessions): the "
    "annotator ids R1..R4 are slots within a nodule, not radiologists. Readers are "
    "exchangeable, so per-annotator reliability (confusion matrices, spammer scores) across "
    "the data set is meaningless and is not reported. Dawid–Skene fits one confusion matrix "
    "per slot, each a mix of arbitrary readers, so it is roughly a pooled reader model: read "
    "its consensus as a smoothed vote, "
    "not as weighting by reader skill."
)
_MV, _DS = Method.MAJORITY_VOTE, Method.DAWID_SKENE
_ACCURACY_COLUMNS = [
    "dataset",
    "method",
    "accuracy",
    "n_gold",
    "fit_seconds",
    "n_iter",
    "converged",
    "status",
    "note",
]
_SHORT = {_MV: "MV", _DS: "DS"}
_NO_TORCH_NOTE = (
    "The mitosis crowd loop was skipped: it needs PyTorch (pip install 'crowdmed[torch]')."
)


@dataclass
class DemoResult:
    """Everything the demo computed, as tables.

    Attributes:
        out_dir: Folder the files were written to.
        accuracy: One row per (data set, method): ``dataset, method, accuracy, n_gold,
            fit_seconds, n_iter, converged, status, note``. ``status`` is ``"ok"``,
            ``"no gold"`` (fitted, nothing to score against) or ``"skipped"`` (the method
            does not apply, e.g. ``sens-spec`` on more than two classes); ``accuracy`` is
            ``NaN`` unless ``"ok"``.
        datasets: One row per data set: size, classes, gold, licence.
        annotators: Per crowd data set, :func:`~crowdmed.quality.annotator_table` under the
            Dawid–Skene posteriors (gold accuracy included), sorted least reliable first, with
            an ``eligible`` column (``n_labels >= min_labels``).
        least_reliable: Per crowd data set, the ``n_least_reliable`` eligible annotators with
            the lowest spammer score (ties: lowest agreement with the DS consensus).
        reliability_check: Per crowd data set: how well the gold-free spammer score tracks
            the annotators' gold accuracy (Spearman correlation, mean gold accuracy of the
            flagged annotators and of the others).
        lidc_agreement: Per LIDC rating (malignancy, subtlety, spiculation): Krippendorff's
            alpha (nominal, ordinal, interval), Fleiss' kappa and the share of nodules where
            readers disagree. Empty without ``lidc_malignancy``.
        lidc_consensus: Per LIDC nodule: readers, ratings, median, MV and DS consensus
            malignancy and the DS confidence. Empty without ``lidc_malignancy``.
        lidc_summary: Headline LIDC numbers (also in ``results.json``).
        masks: Headline numbers of the ``masks`` part (empty when it did not run); the
            per-nodule and per-reader tables are in ``masks_nodules`` and ``masks_readers``.
        mitosis: Headline numbers of the ``mitosis`` part (empty when it did not run); the
            tables are in ``mitosis_metrics`` and ``mitosis_annotators``.
        gold_points: Per binary crowd data set, every annotator's sensitivity and
            specificity against gold with 95 % Jeffreys intervals
            (:func:`~crowdmed.quality.reader_operating_points`).
        gold_consensus_points: Per binary crowd data set, the same for the majority-vote and
            Dawid–Skene consensus (index: the method).
        simulated: Settings and headline numbers of the simulated ordinal and continuous
            readers (empty without the ``crowd`` part); the tables are in
            ``simulated_ordinal`` and ``simulated_continuous``.
        notes: Why a part was skipped (e.g. PyTorch missing).
        files: Name -> path of every file written.
        figures: Titles of the figures embedded in ``report.html`` (empty without
            matplotlib).
        summary: Short plain-text summary (what the CLI prints).
        elapsed_seconds: Wall time of the whole run.
    """

    out_dir: Path
    accuracy: pd.DataFrame
    datasets: pd.DataFrame
    annotators: dict[str, pd.DataFrame]
    least_reliable: dict[str, pd.DataFrame]
    reliability_check: pd.DataFrame
    lidc_agreement: pd.DataFrame
    lidc_consensus: pd.DataFrame
    lidc_summary: dict[str, Any]
    masks: dict[str, Any] = field(default_factory=dict)
    masks_nodules: pd.DataFrame = field(default_factory=pd.DataFrame)
    masks_readers: pd.DataFrame = field(default_factory=pd.DataFrame)
    masks_images: list[Image] = field(default_factory=list)
    mitosis: dict[str, Any] = field(default_factory=dict)
    mitosis_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    mitosis_annotators: pd.DataFrame = field(default_factory=pd.DataFrame)
    mitosis_images: list[Image] = field(default_factory=list)
    gold_points: dict[str, pd.DataFrame] = field(default_factory=dict)
    gold_consensus_points: dict[str, pd.DataFrame] = field(default_factory=dict)
    simulated: dict[str, Any] = field(default_factory=dict)
    simulated_ordinal: pd.DataFrame = field(default_factory=pd.DataFrame)
    simulated_continuous: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    summary: str = ""
    elapsed_seconds: float = 0.0


# ---------------------------------------------------------------------------- helpers
def _check_args(
    methods: Sequence[str | Method] | None,
    datasets: Sequence[str] | None,
    random_state: Any,
    min_labels: Any,
    n_least_reliable: Any,
    progress: Any,
) -> tuple[list[Method], list[str]]:
    if methods is None:
        chosen = list(METHODS)
    else:
        if isinstance(methods, str):
            raise TypeError(
                f"`methods` must be a list of method names; got the string {methods!r}. "
                f"Wrap it in a list: [{methods!r}]."
            )
        chosen = list(dict.fromkeys(check_option(m, Method, "methods") for m in methods))
        if not chosen:
            raise ValueError("`methods` must name at least one method; got an empty list.")
    if datasets is None:
        names = list_datasets()
    else:
        if isinstance(datasets, str):
            raise TypeError(
                f"`datasets` must be a list of data set names; got the string {datasets!r}. "
                f"Wrap it in a list: [{datasets!r}]."
            )
        names = list(dict.fromkeys(dataset_info(d).name for d in datasets))
        if not names:
            raise ValueError("`datasets` must name at least one data set; got an empty list.")
    if random_state is not None and (
        isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer))
    ):
        raise TypeError(
            "`random_state` must be an int or None; got "
            f"{type(random_state).__name__}. It is recorded in results.json, so pass a seed."
        )
    for arg, value in (("min_labels", min_labels), ("n_least_reliable", n_least_reliable)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
    if progress is not None and not callable(progress):
        raise TypeError(
            "`progress` must be a callable progress(description, completed, total) or None; "
            f"got {type(progress).__name__}."
        )
    return chosen, names


def _check_parts(parts: Sequence[str] | None) -> list[str]:
    if parts is None:
        from crowdmed.pipelines.demo_mitosis import torch_available

        return [p for p in PARTS if p != "mitosis" or torch_available()]
    if isinstance(parts, str):
        raise TypeError(
            f"`parts` must be a list of part names; got the string {parts!r}. "
            f"Wrap it in a list: [{parts!r}]."
        )
    chosen = []
    for part in parts:
        if part not in PARTS:
            close = difflib.get_close_matches(str(part), PARTS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown demo part {part!r}; choose from {list(PARTS)}.{hint}")
        if part not in chosen:
            chosen.append(part)
    if not chosen:
        raise ValueError("`parts` must name at least one part; got an empty list.")
    if "mitosis" in chosen:
        from crowdmed.pipelines.demo_mitosis import torch_available

        if not torch_available():
            raise ImportError(
                "The demo part 'mitosis' needs PyTorch: pip install 'crowdmed[torch]' "
                "(or leave 'mitosis' out of `parts`)."
            )
    return chosen


def _make(method: Method, random_state: int | None) -> BaseAggregator:
    agg = make_aggregator(method)
    if "random_state" in agg.get_params():
        agg.set_params(random_state=random_state)
    return agg


def _applies(method: Method, cl: CrowdLabels, gold: np.ndarray | None = None) -> str | None:
    """Why ``method`` cannot be fitted on ``cl``, or ``None`` when it can."""
    if method in (Method.SENS_SPEC, Method.KOS) and cl.n_classes != 2:
        return f"binary only; this data set has {cl.n_classes} classes"
    if method is Method.GOLD_MAJORITY_VOTE and (gold is None or (gold >= 0).sum() < 2):
        return "needs gold labels in fit; this data set has fewer than two gold items"
    return None


def _split_gold(gold: np.ndarray, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Gold of a random half of the gold items (known in fit) and of the other half (scored)."""
    known = np.flatnonzero(gold >= 0)
    fit_items = np.random.default_rng(seed).permutation(known)[: known.size // 2]
    fit_gold = np.full_like(gold, -1)
    fit_gold[fit_items] = gold[fit_items]
    score_gold = gold.copy()
    score_gold[fit_items] = -1
    return fit_gold, score_gold


def _fit(
    agg: BaseAggregator, cl: CrowdLabels, gold: np.ndarray | None = None
) -> tuple[float, list[str]]:
    """Fit, returning the wall time and the messages of any warnings (recorded, not shown)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        agg.fit(cl) if gold is None else agg.fit(cl, gold=gold)
        seconds = time.perf_counter() - start
    messages = list(dict.fromkeys(str(w.message).split(". ")[0] for w in caught))
    return seconds, messages


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------- analyses
def _annotator_tables(
    name: str,
    cl: CrowdLabels,
    posteriors: np.ndarray,
    min_labels: int,
    n_least: int,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    table = annotator_table(cl, posteriors, gold=cl.gold)
    table.insert(1, "eligible", table["n_labels"] >= min_labels)
    order = table.sort_values(
        ["eligible", "spammer_score", "consensus_agreement"],
        ascending=[False, True, True],
        kind="stable",
    )
    least = order[order["eligible"]].head(n_least)
    eligible = order[order["eligible"]]
    check: dict[str, Any] = {
        "dataset": name,
        "n_annotators": cl.n_annotators,
        "n_eligible": len(eligible),
        "spearman_spammer_vs_gold": float("nan"),
        "gold_acc_flagged": float("nan"),
        "gold_acc_others": float("nan"),
    }
    if "gold_accuracy" in eligible and len(eligible) >= 3:
        pair = eligible[["spammer_score", "gold_accuracy"]].dropna()
        if len(pair) >= 3 and pair.nunique().min() > 1:
            check["spearman_spammer_vs_gold"] = float(
                pair["spammer_score"].rank().corr(pair["gold_accuracy"].rank())
            )
        check["gold_acc_flagged"] = float(least["gold_accuracy"].mean())
        others = eligible.drop(index=least.index)["gold_accuracy"]
        check["gold_acc_others"] = float(others.mean()) if len(others) else float("nan")
    return order, least, check


def _consensus_fit(
    method: Method, fits: dict[Method, BaseAggregator], cl: CrowdLabels, seed: int | None
) -> BaseAggregator:
    """The demo's fit of ``method`` on ``cl``, or a new one when it was not among the methods."""
    agg = fits.get(method)
    if agg is None:
        agg = _make(method, seed)
        _fit(agg, cl)
    return agg


def _lidc_analysis(
    cl: CrowdLabels, fits: dict[Method, BaseAggregator], seed: int | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    table = load_lidc_table()
    rows = []
    for rating in LIDC_RATINGS:
        labels = from_long_frame(
            table, item="item", annotator="annotator", label=rating, classes=[1, 2, 3, 4, 5]
        )
        values = np.asarray(labels.classes)[labels.labels]
        spread = pd.Series(values).groupby(labels.items).agg(lambda s: s.max() - s.min())
        rows.append(
            {
                "rating": rating,
                "alpha_ordinal": krippendorff_alpha(labels, level="ordinal"),
                "alpha_interval": krippendorff_alpha(labels, level="interval"),
                "alpha_nominal": krippendorff_alpha(labels, level="nominal"),
                "fleiss_kappa": fleiss_kappa(labels),
                "share_disagree": float((spread > 0).mean()),
                "share_spread_ge_2": float((spread >= 2).mean()),
            }
        )
    agreement = pd.DataFrame(rows).set_index("rating")

    mv = _consensus_fit(_MV, fits, cl, seed)
    ds = _consensus_fit(_DS, fits, cl, seed)
    classes = np.asarray(cl.classes)
    per_item = (
        table.groupby("item", sort=False)
        .agg(
            patient_id=("patient_id", "first"),
            n_readers=("malignancy", "size"),
            ratings=("malignancy", lambda s: ";".join(map(str, s))),
            median=("malignancy", "median"),
            spread=("malignancy", lambda s: int(s.max() - s.min())),
        )
        .reindex(cl.item_ids)
    )
    per_item.index.name = "item"
    per_item["mv"] = classes[mv.labels_]
    per_item["ds"] = classes[ds.labels_]
    per_item["ds_confidence"] = ds.posteriors_.max(axis=1)
    # Ordinal consensus: a severity offset and noise per reading slot, equally spaced grades and
    # a uniform class prior (benchmarks/ordinal_continuous.py gives the reasons for both).
    gr = GradedResponse(locations="fixed", class_prior="uniform", random_state=seed).fit(cl)
    per_item["graded_response"] = classes[gr.labels_]
    per_item["graded_response_confidence"] = gr.posteriors_.max(axis=1)
    median_half_up = np.floor(per_item["median"] + 0.5).astype(int)

    ratings = np.asarray(cl.classes)[cl.labels]
    dist = pd.DataFrame(
        {
            "all ratings": pd.Series(ratings).value_counts(),
            "median (rounded half up)": median_half_up.value_counts(),
            "MV consensus": per_item["mv"].value_counts(),
            "DS consensus": per_item["ds"].value_counts(),
            "graded-response consensus": per_item["graded_response"].value_counts(),
        },
        index=classes,
    ).fillna(0)
    dist = dist.astype(int)
    dist.index.name = "malignancy"
    readers = per_item["n_readers"].value_counts().sort_index()
    summary = {
        "n_nodules": cl.n_items,
        "n_ratings": cl.n_labels,
        "readers_per_nodule": {int(k): int(v) for k, v in readers.items()},
        "alpha_ordinal": float(agreement.loc["malignancy", "alpha_ordinal"]),
        "alpha_interval": float(agreement.loc["malignancy", "alpha_interval"]),
        "alpha_nominal": float(agreement.loc["malignancy", "alpha_nominal"]),
        "fleiss_kappa": float(agreement.loc["malignancy", "fleiss_kappa"]),
        "share_disagree": float(agreement.loc["malignancy", "share_disagree"]),
        "share_spread_ge_2": float(agreement.loc["malignancy", "share_spread_ge_2"]),
        "share_mv_equals_ds": float((per_item["mv"] == per_item["ds"]).mean()),
        "mean_abs_mv_minus_ds": float((per_item["mv"] - per_item["ds"]).abs().mean()),
        "share_suspicious_mv": float((per_item["mv"] >= 4).mean()),
        "share_suspicious_ds": float((per_item["ds"] >= 4).mean()),
        "share_gr_equals_median": float((per_item["graded_response"] == median_half_up).mean()),
        "gr_slot_offsets": {
            str(a): float(v) for a, v in zip(cl.annotator_ids, gr.offsets_, strict=True)
        },
        "gr_slot_noise": {
            str(a): float(v) for a, v in zip(cl.annotator_ids, gr.noise_, strict=True)
        },
        "consensus_distribution": to_jsonable(dist),
        "caveat": LIDC_CAVEAT,
    }
    return agreement, per_item, summary


# ---------------------------------------------------------------------------- report
def _summary(result: DemoResult, params: dict[str, Any], out_dir: Path) -> str:
    acc = result.accuracy
    n_fits = int((acc["status"] != "skipped").sum())
    n_skip = int((acc["status"] == "skipped").sum())
    lines = [
        f"crowdmed {__version__} demo ({', '.join(params['parts'])}) in "
        f"{result.elapsed_seconds:.1f} s (seed {params['random_state']})."
    ]
    if params["datasets"]:
        lines.append(
            f"Truth inference: {len(params['datasets'])} data sets x "
            f"{len(params['methods'])} methods, {n_fits} fits ({n_skip} not applicable)."
        )
    scored = acc[acc["status"] == "ok"]
    if not scored.empty:
        lines.append("Accuracy against gold (best method; MV = majority vote, DS = Dawid-Skene):")
        for name, group in scored.groupby("dataset", sort=False):
            best = group.loc[group["accuracy"].idxmax()]
            ref = group.set_index("method")["accuracy"]
            extra = "".join(
                f"  {_SHORT[m]} {_fmt(ref[m.value])}" for m in (_MV, _DS) if m.value in ref
            )
            lines.append(f"  {name:<12} {best['method']:<14} {_fmt(best['accuracy'])}{extra}")
    if not result.reliability_check.empty:
        rc = result.reliability_check
        lines.append(
            f"Least reliable annotators (>= {params['min_labels']} labels, lowest spammer "
            f"score): mean gold accuracy {_fmt(float(rc['gold_acc_flagged'].mean()), 2)} vs "
            f"{_fmt(float(rc['gold_acc_others'].mean()), 2)} for the others."
        )
    if result.lidc_summary:
        s = result.lidc_summary
        lines += [
            f"LIDC-IDRI malignancy, {s['n_nodules']:,} nodules with 2-4 radiologists: "
            f"Krippendorff's alpha {s['alpha_ordinal']:.2f} ordinal / {s['alpha_nominal']:.2f} "
            f"nominal, Fleiss' kappa {s['fleiss_kappa']:.2f}; readers disagree on "
            f"{s['share_disagree']:.0%} of nodules (by >= 2 points on "
            f"{s['share_spread_ge_2']:.0%}); MV and DS consensus agree on "
            f"{s['share_mv_equals_ds']:.0%}.",
            "  Note: LIDC reader ids are slots within a nodule, not people, so per-reader "
            "reliability is not reported.",
        ]
    if not result.simulated_ordinal.empty:
        o = result.simulated_ordinal.set_index("method")
        c = result.simulated_continuous.set_index("method")
        lines.append(
            "Simulated readers with known truth: exact accuracy on 5 grades, graded-response "
            f"{_fmt(o.loc['graded-response', 'exact_accuracy'])} vs majority vote "
            f"{_fmt(o.loc['majority-vote', 'exact_accuracy'])}; MAE of continuous readings, "
            f"Raykar {_fmt(c.loc['raykar', 'mae'])} vs mean {_fmt(c.loc['mean', 'mae'])}."
        )
    if result.masks:
        m = result.masks
        lines.append(
            f"LIDC-IDRI nodule masks, {m['n_nodules']} nodules x {m['n_readers']} radiologists: "
            f"mean pairwise Dice {m['mean_pairwise_dice_median']:.2f} (median); readers vs "
            f"STAPLE: Dice {m['reader_dice_vs_staple_median']:.2f}, HD95 "
            f"{m['reader_hd95_mm_median']:.1f} mm (medians); STAPLE batch "
            f"{m['staple_seconds']:.2f} s."
        )
    if result.mitosis:
        m = result.mitosis
        sp = m["est_spammer_score_by_kind"]
        lines.append(
            f"Mitosis crowd loop (synthetic fields, simulated crowd): AUC {m['auc_unrefined']:.3f} "
            f"-> {m['auc_aggnet']:.3f} and F1 {m['f1_unrefined']:.2f} -> {m['f1_aggnet']:.2f} "
            f"after AggNet refinement; inferred truth {m['truth_accuracy_aggnet']:.1%} correct "
            f"(majority vote {m['truth_accuracy_mv']:.1%}); spammer score "
            f"{sp.get('spammer', float('nan')):.2f} for spammers vs "
            f"{sp.get('honest', float('nan')):.2f} for honest workers."
        )
    lines += list(result.notes)
    if not result.figures and "report.html" in result.files:
        lines.append("matplotlib is not installed: report.html has no figures.")
    lines.append(f"Report: {out_dir / 'report.html'} (also report.md, results.json, CSVs)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- steps of run_demo
class _Steps:
    """Counts the demo's steps and reports them to the ``progress`` callback."""

    def __init__(self, progress: ProgressCallback | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0

    def __call__(self, description: str) -> None:
        if self.progress is not None:
            self.progress(description, self.done, self.total)
        self.done += 1

    def finish(self) -> None:
        if self.progress is not None:
            self.progress("done", self.total, self.total)


@dataclass
class _CrowdPart:
    """What the ``crowd`` part computed, before it becomes a :class:`DemoResult`."""

    acc_rows: list[dict[str, Any]] = field(default_factory=list)
    ds_rows: list[dict[str, Any]] = field(default_factory=list)
    annotators: dict[str, pd.DataFrame] = field(default_factory=dict)
    least: dict[str, pd.DataFrame] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    lidc_fits: dict[Method, BaseAggregator] = field(default_factory=dict)
    lidc_labels: CrowdLabels | None = None
    load_seconds: dict[str, float] = field(default_factory=dict)
    points: dict[str, pd.DataFrame] = field(default_factory=dict)
    consensus_points: dict[str, pd.DataFrame] = field(default_factory=dict)


def _dataset_row(name: str, cl: CrowdLabels, n_gold: int) -> dict[str, Any]:
    info = dataset_info(name)
    return {
        "dataset": name,
        "description": info.title,
        "items": cl.n_items,
        "annotators": cl.n_annotators,
        "labels": cl.n_labels,
        "classes": cl.n_classes,
        "gold items": n_gold,
        "repeated rows dropped": info.n_repeated_rows,
        "licence": info.licence,
    }


def _fit_methods(
    name: str,
    cl: CrowdLabels,
    gold: np.ndarray | None,
    chosen: list[Method],
    seed: int | None,
    step: _Steps,
) -> tuple[list[dict[str, Any]], dict[Method, BaseAggregator]]:
    """One accuracy row per method (fitted on the labels alone, scored on gold) and the fits."""
    n_gold = 0 if gold is None else int((gold >= 0).sum())
    rows: list[dict[str, Any]] = []
    fitted: dict[Method, BaseAggregator] = {}
    for method in chosen:
        step(f"{name}: {method.value}")
        row: dict[str, Any] = {
            "dataset": name,
            "method": method.value,
            "accuracy": float("nan"),
            "n_gold": n_gold,
            "fit_seconds": float("nan"),
            "n_iter": None,
            "converged": None,
            "status": "ok" if gold is not None else "no gold",
            "note": "",
        }
        reason = _applies(method, cl, gold)
        if reason is not None:
            row.update(status="skipped", note=reason)
            rows.append(row)
            continue
        agg = _make(method, seed)
        fit_gold, score_gold, notes = None, gold, []
        if method is Method.GOLD_MAJORITY_VOTE and gold is not None:
            # it learns its weights from gold: half of the gold items are its known answers,
            # and it is scored on the other half
            fit_gold, score_gold = _split_gold(gold, seed)
            notes.append(
                f"weights from {int((fit_gold >= 0).sum())} gold items, scored on the other "
                f"{int((score_gold >= 0).sum())}"
            )
        seconds, messages = _fit(agg, cl, fit_gold)
        fitted[method] = agg
        row["fit_seconds"] = seconds
        row["n_iter"] = getattr(agg, "n_iter_", None)
        row["converged"] = getattr(agg, "converged_", None)
        row["note"] = "; ".join(notes + messages)
        if score_gold is not None:
            row["n_gold"] = int((score_gold >= 0).sum())
            known = score_gold >= 0
            row["accuracy"] = float(np.mean(agg.labels_[known] == gold[known]))
        rows.append(row)
    return rows, fitted


def _run_crowd(
    names: list[str],
    chosen: list[Method],
    seed: int | None,
    min_labels: int,
    n_least_reliable: int,
    step: _Steps,
) -> _CrowdPart:
    """Fit every method on every data set; rank the annotators of each crowd data set."""
    part = _CrowdPart()
    for name in names:
        step(f"load {name}")
        t0 = time.perf_counter()
        cl = load_dataset(name)
        part.load_seconds[name] = time.perf_counter() - t0
        gold = cl.gold if cl.gold is not None and (cl.gold >= 0).any() else None
        part.ds_rows.append(_dataset_row(name, cl, 0 if gold is None else int((gold >= 0).sum())))
        rows, fitted = _fit_methods(name, cl, gold, chosen, seed, step)
        part.acc_rows += rows
        if dataset_info(name).medical:
            part.lidc_fits, part.lidc_labels = fitted, cl
            continue
        # The ranking needs the DS posteriors even when DS is not among the methods.
        ds_fit = _consensus_fit(_DS, fitted, cl, seed)
        table, top, check = _annotator_tables(
            name, cl, ds_fit.posteriors_, int(min_labels), int(n_least_reliable)
        )
        part.annotators[name], part.least[name] = table, top
        part.checks.append(check)
        if gold is not None and cl.n_classes == 2:
            mv_fit = _consensus_fit(_MV, fitted, cl, seed)
            part.points[name], part.consensus_points[name] = _gold_points(cl, gold, mv_fit, ds_fit)
    return part


def _gold_points(
    cl: CrowdLabels, gold: np.ndarray, mv: BaseAggregator, ds: BaseAggregator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Annotators, and the MV and DS consensus, against gold: sensitivity and specificity."""
    points = reader_operating_points(cl, gold)
    known = gold >= 0
    rows = {}
    for method, fit in ((_MV, mv), (_DS, ds)):
        said, truth = fit.labels_[known] == 1, gold[known] == 1
        rows[method.value] = {
            "sensitivity": float((said & truth).sum() / max(int(truth.sum()), 1)),
            "specificity": float((~said & ~truth).sum() / max(int((~truth).sum()), 1)),
        }
    consensus = pd.DataFrame.from_dict(rows, orient="index")
    consensus.index.name = "consensus"
    return points, consensus


def _run_params(
    run_parts: list[str],
    chosen: list[Method],
    names: list[str],
    seed: int | None,
    min_labels: int,
    n_least_reliable: int,
) -> dict[str, Any]:
    """The parameters of the run, as recorded in ``results.json``."""
    return {
        "parts": run_parts,
        "methods": [m.value for m in chosen],
        "datasets": names,
        "random_state": seed,
        "min_labels": int(min_labels),
        "n_least_reliable": int(n_least_reliable),
        "aggregator_params": {m.value: _make(m, seed).get_params() for m in chosen},
    }


def _run_masks(step: _Steps) -> Any:
    step("LIDC-IDRI nodule masks: STAPLE")
    from crowdmed.pipelines.demo_masks import run_masks_part

    return run_masks_part(figures=_has_matplotlib())


def _run_mitosis(seed: int | None, step: _Steps) -> Any:
    step("mitosis crowd loop (synthetic)")
    from crowdmed.pipelines.demo_mitosis import run_mitosis_part

    done_before, progress, total = step.done, step.progress, step.total

    def loop_step(name: str) -> None:
        if progress is not None:
            progress(f"mitosis crowd loop (synthetic): {name}", done_before, total)

    return run_mitosis_part(random_state=seed, figures=_has_matplotlib(), progress=loop_step)


def _build_result(
    out: Path,
    crowd: _CrowdPart,
    lidc: tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]],
    masks_part: Any,
    mitosis_part: Any,
    notes: list[str],
) -> DemoResult:
    accuracy = pd.DataFrame(crowd.acc_rows, columns=_ACCURACY_COLUMNS)
    accuracy["n_iter"] = accuracy["n_iter"].astype("Int64")
    accuracy["converged"] = accuracy["converged"].astype("boolean")
    lidc_agreement, lidc_consensus, lidc_summary = lidc
    result = DemoResult(
        out_dir=out,
        accuracy=accuracy,
        datasets=pd.DataFrame(
            crowd.ds_rows, columns=["dataset"] if not crowd.ds_rows else None
        ).set_index("dataset"),
        annotators=crowd.annotators,
        least_reliable=crowd.least,
        reliability_check=pd.DataFrame(crowd.checks),
        lidc_agreement=lidc_agreement,
        lidc_consensus=lidc_consensus,
        lidc_summary=lidc_summary,
    )
    if masks_part is not None:
        result.masks = masks_part.summary
        result.masks_nodules = masks_part.per_nodule
        result.masks_readers = masks_part.per_reader
        result.masks_images = masks_part.images
    if mitosis_part is not None:
        result.mitosis = mitosis_part.summary
        result.mitosis_metrics = mitosis_part.metrics
        result.mitosis_annotators = mitosis_part.annotators
        result.mitosis_images = mitosis_part.images
    result.gold_points = crowd.points
    result.gold_consensus_points = crowd.consensus_points
    result.notes = notes
    return result


def _write_csv(path: Path, table: pd.DataFrame, *, index: bool) -> None:
    with atomic_write(path, newline="", encoding="utf-8") as fh:
        table.to_csv(fh, index=index, lineterminator="\n")


def _readers_vs_gold(result: DemoResult) -> pd.DataFrame:
    """One row per annotator and per consensus of each binary data set, against gold."""
    parts = []
    for name, points in result.gold_points.items():
        consensus = result.gold_consensus_points[name].reset_index()
        consensus = consensus.rename(columns={"consensus": "annotator"})
        parts.append(points.assign(dataset=name, kind="annotator"))
        parts.append(consensus.assign(dataset=name, kind="consensus"))
    table = pd.concat(parts, ignore_index=True)
    first = ["dataset", "kind", "annotator"]
    return table[first + [c for c in table.columns if c not in first]]


def _write_tables(result: DemoResult, out: Path, mitosis_part: Any) -> dict[str, Path]:
    """Write the CSV tables (and the mitosis maps); return name -> path of each file."""
    files = {"accuracy.csv": out / "accuracy.csv"}
    _write_csv(files["accuracy.csv"], result.accuracy, index=False)
    for name, table in result.annotators.items():
        key = f"annotators_{name}.csv"
        files[key] = out / key
        _write_csv(files[key], table, index=True)
    if not result.lidc_consensus.empty:
        files["lidc_consensus.csv"] = out / "lidc_consensus.csv"
        _write_csv(files["lidc_consensus.csv"], result.lidc_consensus, index=True)
    for key, table in (
        ("lidc_masks_nodules.csv", result.masks_nodules),
        ("lidc_masks_readers.csv", result.masks_readers),
        ("mitosis_metrics.csv", result.mitosis_metrics),
        ("mitosis_annotators.csv", result.mitosis_annotators),
        ("simulated_ordinal.csv", result.simulated_ordinal),
        ("simulated_continuous.csv", result.simulated_continuous),
    ):
        if not table.empty:
            files[key] = out / key
            _write_csv(files[key], table, index=table.index.name is not None)
    if result.gold_points:
        files["readers_vs_gold.csv"] = out / "readers_vs_gold.csv"
        _write_csv(files["readers_vs_gold.csv"], _readers_vs_gold(result), index=False)
    if mitosis_part is not None:
        files["mitosis_maps.npz"] = out / "mitosis_maps.npz"
        with atomic_write(files["mitosis_maps.npz"], mode="wb") as fh:
            maps: dict[str, Any] = dict(mitosis_part.maps)
            np.savez_compressed(fh, **maps)
    files.update(
        {"report.md": out / "report.md", "report.html": out / "report.html"},
    )
    files["results.json"] = out / "results.json"
    return files


def _write_reports(
    result: DemoResult, params: dict[str, Any], figs: DemoFigures, started_at: str
) -> None:
    sections = demo_sections(result, params, figs)
    subtitle = f"crowdmed {__version__} · {started_at} · seed {params['random_state']}"
    with atomic_write(result.files["report.md"], encoding="utf-8") as fh:
        fh.write(render_markdown(TITLE, sections, subtitle=subtitle))
    with atomic_write(result.files["report.html"], encoding="utf-8") as fh:
        fh.write(render_html(TITLE, sections, subtitle=subtitle))


def _write_results_json(
    result: DemoResult,
    params: dict[str, Any],
    started_at: str,
    load_seconds: dict[str, float],
) -> None:
    fit_total = float(np.nansum(result.accuracy["fit_seconds"].to_numpy(dtype=float)))
    payload = {
        "crowdmed_version": __version__,
        "created_utc": started_at,
        "seed": params["random_state"],
        "params": params,
        "environment": _environment(),
        "timing": {
            "total_seconds": result.elapsed_seconds,
            "fit_seconds_total": fit_total,
            "load_seconds": load_seconds,
        },
        "datasets": result.datasets,
        "accuracy": result.accuracy,
        "least_reliable": result.least_reliable,
        "reliability_check": result.reliability_check,
        "lidc": (
            {**result.lidc_summary, "agreement": result.lidc_agreement}
            if result.lidc_summary
            else {}
        ),
        "masks": result.masks,
        "mitosis": result.mitosis,
        "simulated_readers": (
            {
                **result.simulated,
                "ordinal": result.simulated_ordinal,
                "continuous": result.simulated_continuous,
            }
            if result.simulated
            else {}
        ),
        "notes": result.notes,
        "figures": result.figures,
        "files": sorted(result.files),
        "summary": result.summary,
    }
    with atomic_write(result.files["results.json"], encoding="utf-8") as fh:
        json.dump(to_jsonable(payload), fh, indent=2, allow_nan=False)
        fh.write("\n")


# ---------------------------------------------------------------------------- entry point
def run_demo(
    out_dir: str | Path,
    *,
    methods: Sequence[str | Method] | None = None,
    datasets: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    random_state: int | None = 0,
    min_labels: int = 10,
    n_least_reliable: int = 5,
    parts: Sequence[str] | None = None,
) -> DemoResult:
    """Run every classification method on every bundled data set and write a report.

    For each data set, each method is fitted on the labels alone (gold is never passed to
    ``fit``) and timed; where gold labels exist (all crowd data sets) its accuracy is the share
    of items whose consensus equals gold. ``sens-spec`` and ``kos`` are binary only and are
    skipped on data sets with more classes; ``gold-majority-vote`` needs gold in ``fit``: it
    takes its weights from a random half of the gold items (drawn with ``random_state``) and
    is scored on the other half. For each crowd data set the annotators are ranked with
    :func:`~crowdmed.quality.annotator_table` under the Dawid–Skene posteriors. On
    ``lidc_malignancy`` the demo reports the readers' agreement (Krippendorff's alpha, Fleiss'
    kappa, share of nodules with disagreement) and the MV / DS consensus, but no per-reader
    reliability: LIDC reader ids are slots within a nodule, not people.

    Args:
        out_dir: Folder for the outputs (created when missing; files in it are replaced).
        methods: Method names (see :data:`crowdmed.aggregation.METHODS`); all when omitted.
        datasets: Bundled data set names (see
            :func:`crowdmed.data.datasets.list_datasets`); all when omitted.
        progress: Optional ``progress(description, completed, total)`` callback, called
            before each step with the number of steps done so far and once at the end with
            ``completed == total`` (see :data:`ProgressCallback`).
        random_state: Seed given to every aggregator that takes one (ties and random
            initialisation); recorded in ``results.json``.
        min_labels: Fewest labels an annotator needs to be ranked among the least reliable.
        n_least_reliable: How many least reliable annotators to list per data set.
        parts: Which parts to run (see :data:`PARTS`); all when omitted. ``masks`` fits
            STAPLE on four radiologists' 3-D masks of 100 bundled LIDC-IDRI nodules and
            compares each reader with the consensus (Dice, HD95, sensitivity, specificity).

    Returns:
        The tables, the paths written and a plain-text summary (``result.summary``).

    Raises:
        ValueError: Unknown method or data set name (the message suggests the closest), or a
            non-positive ``min_labels`` / ``n_least_reliable``.
        TypeError: ``random_state`` that is not an int or None, or a ``progress`` that is
            not callable.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     result = run_demo(tmp, datasets=["MS"], methods=["majority-vote", "wawa"],
        ...                       parts=["crowd"])
        ...     written = sorted(p.name for p in result.files.values())
        >>> result.accuracy[["dataset", "method", "accuracy"]].round(3)
          dataset         method  accuracy
        0      MS  majority-vote     0.690
        1      MS           wawa     0.793
        >>> written  # doctest: +NORMALIZE_WHITESPACE
        ['accuracy.csv', 'annotators_MS.csv', 'report.html', 'report.md', 'results.json',
         'simulated_continuous.csv', 'simulated_ordinal.csv']
    """
    start = time.perf_counter()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    chosen, names = _check_args(
        methods, datasets, random_state, min_labels, n_least_reliable, progress
    )
    run_parts = _check_parts(parts)
    skipped_notes = [_NO_TORCH_NOTE] if parts is None and "mitosis" not in run_parts else []
    if "crowd" not in run_parts:
        names = []
    seed = None if random_state is None else int(random_state)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    optional = ("masks" in run_parts) + ("mitosis" in run_parts)
    total = len(names) * (1 + len(chosen)) + (LIDC in names) + optional + 1  # + 1: the report
    total += "crowd" in run_parts  # the simulated ordinal and continuous readers
    step = _Steps(progress, total)

    crowd = _run_crowd(names, chosen, seed, min_labels, n_least_reliable, step)
    lidc: tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]] = (pd.DataFrame(), pd.DataFrame(), {})
    if crowd.lidc_labels is not None:
        step("LIDC-IDRI agreement and consensus")
        lidc = _lidc_analysis(crowd.lidc_labels, crowd.lidc_fits, seed)
    sim_part = None
    if "crowd" in run_parts:
        step("ordinal and continuous methods on simulated readers")
        from crowdmed.pipelines.demo_ordinal_continuous import run_ordinal_continuous_part

        sim_part = run_ordinal_continuous_part(random_state=seed)
    masks_part = _run_masks(step) if "masks" in run_parts else None
    mitosis_part = _run_mitosis(seed, step) if "mitosis" in run_parts else None

    step("write report")
    result = _build_result(out, crowd, lidc, masks_part, mitosis_part, skipped_notes)
    if sim_part is not None:
        result.simulated = sim_part.summary
        result.simulated_ordinal = sim_part.ordinal
        result.simulated_continuous = sim_part.continuous
    params = _run_params(run_parts, chosen, names, seed, min_labels, n_least_reliable)
    figs = demo_figures(result, crowd.lidc_labels, params)
    result.figures = [i.caption for i in figs.all(result)]
    result.files = _write_tables(result, out, mitosis_part)
    result.elapsed_seconds = time.perf_counter() - start
    _write_reports(result, params, figs, started_at)
    result.elapsed_seconds = time.perf_counter() - start
    result.summary = _summary(result, params, out)
    _write_results_json(result, params, started_at, crowd.load_seconds)
    step.finish()
    return result


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _environment() -> dict[str, Any]:
    import scipy

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "matplotlib": None,
    }
    try:
        import matplotlib

        env["matplotlib"] = matplotlib.__version__
    except ImportError:
        pass
    return env
