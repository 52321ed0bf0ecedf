"""The demo's report, summary first: what was run, what it found, one figure per task.

Order: the LIDC-IDRI radiologists (malignancy ratings, then nodule outlines and STAPLE),
the AggNet crowd loop, then the crowd benchmark sets as evidence that the methods are right.
Every sentence is built from the numbers of the run that writes the report; long tables are
folded (``<details>``) or linked as the CSV files next to the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crowdmed._version import __version__
from crowdmed.report.html import Bullets, Details, Gallery, Image, Link, Section

if TYPE_CHECKING:
    from crowdmed.data.labels import CrowdLabels
    from crowdmed.pipelines.demo import DemoResult

__all__ = ["DemoFigures", "alpha_reading", "demo_figures", "demo_sections", "found_sentences"]

TITLE = "crowdmed demo: what many readers agree on"


@dataclass
class DemoFigures:
    """The figures of the demo report, by place.

    Attributes:
        headline: One figure per task, shown side by side under the summary.
        accuracy: All methods' accuracy on the crowd benchmark sets.
        benchmark_roc: Annotators and consensus in ROC space, one per binary benchmark set.
        benchmark_forest: Gold accuracy with intervals, one per multi-class benchmark set.
        masks_readers: Readers against the STAPLE consensus and against each other.
        note: Why there are no figures (matplotlib missing), or ``None``.
    """

    headline: list[Image] = field(default_factory=list)
    accuracy: list[Image] = field(default_factory=list)
    benchmark_roc: list[Image] = field(default_factory=list)
    benchmark_forest: list[Image] = field(default_factory=list)
    masks_readers: list[Image] = field(default_factory=list)
    note: str | None = None

    def all(self, result: DemoResult) -> list[Image]:
        """Every figure of the report, in page order."""
        masks_gallery = result.masks_images[1:] if self.headline else result.masks_images
        mitosis_gallery = result.mitosis_images[1:] if self.headline else result.mitosis_images
        return [
            *self.headline,
            *self.masks_readers,
            *masks_gallery,
            *mitosis_gallery,
            *self.accuracy,
            *self.benchmark_roc,
            *self.benchmark_forest,
        ]


# ---------------------------------------------------------------------------- sentences
def alpha_reading(alpha: float) -> str:
    """Krippendorff's reading of an alpha value (2004: 0.8 reliable, 0.667 tentative).

    Examples:
        >>> alpha_reading(0.43)
        'below the 0.667 Krippendorff asks for even tentative conclusions'
    """
    if not math.isfinite(alpha):
        return "not defined"
    if alpha >= 0.8:
        return "at or above the 0.8 Krippendorff asks for reliable data"
    if alpha >= 0.667:
        return "enough for tentative conclusions only (0.667 ≤ alpha < 0.8)"
    return "below the 0.667 Krippendorff asks for even tentative conclusions"


def _change(what: str, before: float, after: float, digits: int = 3) -> str:
    """``raised the test AUC from 0.938 to 0.951`` (or lowered / left unchanged)."""
    if after == before:
        return f"left {what} unchanged at {after:.{digits}f}"
    verb = "raised" if after > before else "lowered"
    return f"{verb} {what} from {before:.{digits}f} to {after:.{digits}f}"


def _benchmark_facts(result: DemoResult) -> dict[str, Any] | None:
    acc = result.accuracy
    scored = acc[acc["status"] == "ok"] if not acc.empty else acc
    if scored.empty:
        return None
    table = scored.pivot(index="dataset", columns="method", values="accuracy")
    best_method = table.idxmax(axis=1)
    best = table.max(axis=1)
    facts: dict[str, Any] = {
        "n_sets": len(table),
        "n_methods": int(acc["method"].nunique()),
        "best_method": best_method,
        "best": best,
        "gmv": "gold-majority-vote" in table.columns,
    }
    if "majority-vote" in table.columns:
        gain = (best - table["majority-vote"]) * 100
        facts["gain_mean"] = float(gain.mean())
        facts["gain_max_set"] = str(gain.idxmax())
        facts["gain_max"] = float(gain.max())
        if "dawid-skene" in table.columns:
            diff = table["dawid-skene"] - table["majority-vote"]
            facts["ds_above_mv"] = int((diff > 0).sum())
            facts["ds_below_mv"] = int((diff < 0).sum())
    return facts


def found_sentences(result: DemoResult) -> list[str]:
    """One sentence per task run: what the demo found, from this run's numbers."""
    out = []
    if result.lidc_summary:
        s = result.lidc_summary
        out.append(
            f"LIDC-IDRI malignancy ratings ({s['n_nodules']:,} lung nodules, 2-4 radiologists "
            f"each, no gold standard): the readers disagree on {s['share_disagree']:.0%} of "
            f"nodules and by two or more grades on {s['share_spread_ge_2']:.0%}. Krippendorff's "
            f"ordinal alpha is {s['alpha_ordinal']:.2f}, {alpha_reading(s['alpha_ordinal'])}; "
            f"majority vote and Dawid–Skene give the same consensus grade on "
            f"{s['share_mv_equals_ds']:.0%} of nodules."
        )
    if result.masks:
        m = result.masks
        out.append(
            f"LIDC-IDRI nodule outlines ({m['n_nodules']} nodules, {m['n_readers']} "
            "radiologists each): readers overlap with one another with a median mean pairwise "
            f"Dice of {m['mean_pairwise_dice_median']:.2f}; each reader against the STAPLE "
            f"consensus has a median Dice of {m['reader_dice_vs_staple_median']:.2f} and a "
            f"median HD95 of {m['reader_hd95_mm_median']:.1f} mm. STAPLE equals the majority "
            f"vote on {m['share_staple_equals_majority']:.0%} of nodules."
        )
    if result.mitosis:
        m = result.mitosis
        sp = m["est_spammer_score_by_kind"]
        out.append(
            "AggNet crowd loop (synthetic fields, simulated crowd of "
            f"{m['n_annotators']} workers, one seed): refinement through the aggregation layer "
            f"{_change('the test AUC', m['auc_unrefined'], m['auc_aggnet'])} (F1 "
            f"{m['f1_unrefined']:.2f} → {m['f1_aggnet']:.2f}); the inferred truth is "
            f"{m['truth_accuracy_aggnet']:.1%} correct against {m['truth_accuracy_mv']:.1%} for "
            f"the majority vote; the spammers' estimated spammer score is "
            f"{sp.get('spammer', float('nan')):.2f} against "
            f"{sp.get('honest', float('nan')):.2f} for honest workers."
        )
    facts = _benchmark_facts(result)
    if facts is not None:
        text = (
            f"Crowd benchmark sets ({facts['n_sets']} with gold labels, "
            f"{facts['n_methods']} methods; gold is used only to score them"
            + (
                ", except by gold-majority-vote, which learns from half of it"
                if facts["gmv"]
                else ""
            )
            + "): "
        )
        if "gain_mean" in facts:
            text += (
                "the most accurate method per set is on average "
                f"{facts['gain_mean']:.1f} points above majority vote (most on "
                f"{facts['gain_max_set']}: +{facts['gain_max']:.1f} points with "
                f"{facts['best_method'][facts['gain_max_set']]})"
            )
            if "ds_above_mv" in facts:
                text += (
                    f"; Dawid–Skene is above majority vote on {facts['ds_above_mv']} and "
                    f"below on {facts['ds_below_mv']} of {facts['n_sets']}"
                )
            text += "."
        else:
            text += "accuracy per method in the table below."
        rc = result.reliability_check
        if not rc.empty and rc["gold_acc_flagged"].notna().any():
            text += (
                " The annotators flagged as least reliable without gold have a mean gold "
                f"accuracy of {float(rc['gold_acc_flagged'].mean()):.2f} against "
                f"{float(rc['gold_acc_others'].mean()):.2f} for the others."
            )
        out.append(text)
    return out


def _what_was_run(result: DemoResult, params: dict[str, Any]) -> str:
    done = []
    if result.lidc_summary:
        done.append("truth inference on the LIDC-IDRI radiologists' malignancy ratings")
    if result.masks:
        done.append(
            f"STAPLE on {result.masks['n_readers']} radiologists' 3-D outlines of "
            f"{result.masks['n_nodules']} LIDC-IDRI nodules"
        )
    if result.mitosis:
        done.append("the AggNet crowd loop on synthetic high-power fields")
    n_crowd = len([d for d in params["datasets"] if d != "lidc_malignancy"])
    if n_crowd:
        done.append(
            f"{len(params['methods'])} truth-inference methods on {n_crowd} crowd benchmark "
            f"set{'s' if n_crowd != 1 else ''}"
        )
    listed = "; ".join(done) if done else "nothing"
    return (
        f"What was run: {listed}. crowdmed {__version__}, seed {params['random_state']}, "
        f"{result.elapsed_seconds:.0f} s; every number below comes from this run "
        "(`results.json` and the CSV files next to this page)."
    )


# ---------------------------------------------------------------------------- figures
def _png(fig: Any) -> bytes:
    from crowdmed.report.figures import figure_to_png

    return figure_to_png(fig)


def _benchmark_headline(result: DemoResult) -> Image | None:
    from crowdmed.report.figures import plot_accuracy

    acc = result.accuracy
    scored = acc[acc["status"] == "ok"] if not acc.empty else acc
    if scored.empty:
        return None
    rows = []
    for name, group in scored.groupby("dataset", sort=False):
        by = group.set_index("method")["accuracy"]
        for method in ("majority-vote", "dawid-skene"):
            if method in by:
                rows.append({"dataset": name, "method": method, "accuracy": float(by[method])})
        rows.append({"dataset": name, "method": "best of all", "accuracy": float(by.max())})
    fig, ax = plot_accuracy(pd.DataFrame(rows))
    ax.set_title("Crowd benchmark sets: accuracy against gold", fontsize="medium")
    return Image(
        _png(fig),
        alt="Bar chart: accuracy of majority vote, Dawid–Skene and the best method per data set",
        caption=(
            "Crowd benchmark sets: majority vote, Dawid–Skene and the most accurate of all "
            "methods per set, against gold (the y axis does not start at 0)."
        ),
    )


def _masks_readers_figure(result: DemoResult) -> Image:
    from crowdmed.report.figures import plot_histograms

    fig, ax = plot_histograms(
        {
            "reader vs reader (mean pairwise, per nodule)": result.masks_nodules[
                "mean_pairwise_dice"
            ],
            "each reader vs STAPLE (per reader and nodule)": result.masks_readers["dice_vs_staple"],
        },
        bins=np.linspace(0, 1, 26),
        xlabel="Dice",
    )
    ax.set_title("LIDC-IDRI outlines: readers against the consensus", fontsize="medium")
    return Image(
        _png(fig),
        alt="Histograms of Dice between readers and of each reader against the STAPLE consensus",
        caption=(
            "Dice of each radiologist's outline against the STAPLE consensus (per reader and "
            "nodule) and between radiologists (mean pairwise Dice per nodule)."
        ),
    )


def _lidc_headline(lidc: CrowdLabels) -> Image:
    from crowdmed.report.figures import plot_rating_spread

    fig, ax = plot_rating_spread(lidc)
    ax.set_title("LIDC-IDRI malignancy: spread of ratings per nodule", fontsize="medium")
    return Image(
        _png(fig),
        alt="Stacked bar chart of the malignancy rating spread per nodule",
        caption=(
            "LIDC-IDRI: nodules by the spread (max - min) of their 1-5 malignancy ratings, "
            "stacked by the number of readers."
        ),
    )


def _gold_accuracy_intervals(table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Gold accuracy of each eligible annotator with its Jeffreys interval."""
    from scipy.special import betaincinv

    rows = table[table["eligible"] & (table["n_gold"] > 0)].copy()
    n = rows["n_gold"].to_numpy(dtype=float)
    hits = np.round(rows["gold_accuracy"].to_numpy(dtype=float) * n)
    tail = (1 - level) / 2
    rows["low"] = betaincinv(hits + 0.5, n - hits + 0.5, tail)
    rows["high"] = betaincinv(hits + 0.5, n - hits + 0.5, 1 - tail)
    return rows


def _benchmark_forest(result: DemoResult, params: dict[str, Any]) -> list[Image]:
    """Multi-class sets: the least accurate annotators' gold accuracy with 95 % intervals."""
    from crowdmed.report.readers import plot_reliability

    images = []
    for name, table in result.annotators.items():
        if name in result.gold_points or "gold_accuracy" not in table:
            continue
        rows = _gold_accuracy_intervals(table)
        if rows.empty:
            continue
        fig, ax = plot_reliability(
            rows, value="gold_accuracy", low="low", high="high", max_rows=20,
            label="accuracy on gold (95 % Jeffreys interval)",
        )  # fmt: skip
        ax.set_title(f"{name}: the 20 least accurate annotators", fontsize="medium")
        images.append(
            Image(
                _png(fig),
                alt=f"Forest plot of the gold accuracy of the {name} annotators",
                caption=(
                    f"{name}: the 20 annotators (with at least {params['min_labels']} labels) "
                    "least accurate on gold, with 95 % Jeffreys intervals."
                ),
            )
        )
    return images


def _benchmark_roc(result: DemoResult) -> list[Image]:
    from crowdmed.report.readers import plot_operating_points

    images = []
    points = getattr(result, "gold_points", {}) or {}
    consensus = getattr(result, "gold_consensus_points", {}) or {}
    for name, table in points.items():
        fig, _ = plot_operating_points(
            table, consensus=consensus.get(name), min_items=5, title=f"{name}: annotators vs gold"
        )
        images.append(
            Image(
                _png(fig),
                alt=f"ROC space of the {name} annotators and consensus against gold",
                caption=(
                    f"{name}: annotators with at least 5 gold items of each class (dots, 95 % "
                    "Jeffreys intervals) and the majority-vote and Dawid–Skene consensus "
                    "against gold."
                ),
            )
        )
    return images


def demo_figures(
    result: DemoResult, lidc: CrowdLabels | None, params: dict[str, Any]
) -> DemoFigures:
    """Draw the report's figures, or explain why there are none (matplotlib missing)."""
    try:
        import matplotlib  # noqa: F401  (optional dependency)
    except ImportError:
        return DemoFigures(
            note=(
                "Figures are omitted: matplotlib is not installed (pip install 'crowdmed[report]')."
            )
        )
    from crowdmed.report.figures import plot_accuracy

    figs = DemoFigures()
    if lidc is not None:
        figs.headline.append(_lidc_headline(lidc))
    figs.headline += result.masks_images[:1] + result.mitosis_images[:1]
    bench = _benchmark_headline(result)
    if bench is not None:
        figs.headline.append(bench)
        scored = result.accuracy[result.accuracy["status"] == "ok"]
        fig, ax = plot_accuracy(scored)
        ax.set_title("Accuracy against gold labels, every method")
        figs.accuracy.append(
            Image(
                _png(fig),
                alt="Bar chart of the accuracy of each method on each crowd data set",
                caption=(
                    "Accuracy against gold per data set (groups) and method (bars); the y "
                    "axis does not start at 0."
                ),
            )
        )
    if result.masks:
        figs.masks_readers.append(_masks_readers_figure(result))
    figs.benchmark_roc = _benchmark_roc(result)
    figs.benchmark_forest = _benchmark_forest(result, params)
    return figs


# ---------------------------------------------------------------------------- sections
def _summary_section(result: DemoResult, params: dict[str, Any], figs: DemoFigures) -> Section:
    blocks: list[Any] = [_what_was_run(result, params)]
    found = found_sentences(result)
    if found:
        blocks += ["What it found:", Bullets(found)]
    if figs.headline:
        blocks.append(Gallery(figs.headline))
    return Section("Summary", blocks)


def _lidc_section(result: DemoResult) -> Section:
    from crowdmed.pipelines.demo import LIDC_CAVEAT

    s = result.lidc_summary
    readers = ", ".join(f"{k}: {v}" for k, v in s["readers_per_nodule"].items())
    return Section(
        "LIDC-IDRI radiologists: malignancy ratings",
        [
            f"{s['n_nodules']:,} lung nodules rated 1-5 by 2-4 radiologists "
            f"({s['n_ratings']:,} ratings; readers per nodule {readers}). No gold "
            f"standard. Readers disagree on {s['share_disagree']:.1%} of nodules and "
            f"differ by two or more points on {s['share_spread_ge_2']:.1%}.",
            "Agreement between readers (Krippendorff's alpha for three levels of "
            "measurement, Fleiss' kappa; 1 = perfect, 0 = chance):",
            result.lidc_agreement,
            "Consensus malignancy: number of nodules per consensus class (the first "
            "column counts the individual ratings). MV and DS agree on "
            f"{s['share_mv_equals_ds']:.1%} of nodules (mean |MV - DS| "
            f"{s['mean_abs_mv_minus_ds']:.2f}); MV ties are broken at random with "
            "the seed.",
            pd.DataFrame(s["consensus_distribution"]).set_index("malignancy"),
            "The graded-response consensus treats the ratings as ordered: each reading slot "
            "has a severity offset and a noise scale (in grades), estimated by EM "
            "(`crowdmed.aggregation.GradedResponse`, equally spaced grades, uniform class "
            "prior). It equals the median (rounded half up) for "
            f"{s['share_gr_equals_median']:.1%} of nodules. Slot offsets: "
            + ", ".join(f"{k} {v:+.2f}" for k, v in s["gr_slot_offsets"].items())
            + "; noise: "
            + ", ".join(f"{k} {v:.2f}" for k, v in s["gr_slot_noise"].items())
            + ". The slots are not people, so these are slot effects, not radiologists' "
            "severities.",
            "Caveat: " + LIDC_CAVEAT,
            Link(
                "lidc_consensus.csv",
                "lidc_consensus.csv",
                "Per nodule: the ratings, median, MV, DS and graded-response consensus.",
            ),
        ],
    )


def _masks_section(result: DemoResult, figs: DemoFigures) -> Section:
    from crowdmed.pipelines.demo_masks import CAVEAT, distribution_table

    m = result.masks
    lo, hi = m["mean_pairwise_dice_iqr"]
    gallery = result.masks_images[1:] if figs.headline else result.masks_images
    nodules = (
        result.masks_nodules[
            [
                "staple_mm3",
                "majority_mm3",
                "mean_pairwise_dice",
                "dice_staple_vs_majority",
                "staple_iterations",
            ]
        ]
        .quantile([0.1, 0.5, 0.9])
        .T.rename(columns={0.1: "p10", 0.5: "median", 0.9: "p90"})
    )
    return Section(
        "LIDC-IDRI radiologists: nodule outlines (STAPLE)",
        [
            f"{m['n_nodules']} lung nodules, each outlined in 3-D by {m['n_readers']} "
            "radiologists (bundled masks). Readers agree with a median mean pairwise "
            f"Dice of {m['mean_pairwise_dice_median']:.3f} (IQR {lo:.3f}-{hi:.3f}). "
            "Binary STAPLE (Warfield et al. 2004) fitted all nodules in one batch in "
            f"{m['staple_seconds']:.2f} s; its consensus equals the majority vote on "
            f"{m['share_staple_equals_majority']:.0%} of nodules.",
            *figs.masks_readers,
            "Each reader against the STAPLE consensus (quantiles over reader-nodule "
            "pairs; HD95 = 95th-percentile Hausdorff distance in mm):",
            distribution_table(result.masks_readers),
            *([Gallery(gallery)] if gallery else []),
            "Caveat: " + CAVEAT,
            Details(
                "Consensus volumes and agreement (quantiles over nodules)",
                [nodules],
            ),
            Link("lidc_masks_nodules.csv", "lidc_masks_nodules.csv", "One row per nodule."),
            Link(
                "lidc_masks_readers.csv",
                "lidc_masks_readers.csv",
                "One row per reader and nodule: STAPLE sensitivity and specificity, Dice and "
                "HD95 against the consensus.",
            ),
        ],
    )


def _mitosis_section(result: DemoResult, figs: DemoFigures) -> Section:
    m = result.mitosis
    st = m["settings"]
    metrics = result.mitosis_metrics.set_index("model")
    ann = result.mitosis_annotators
    cols = [
        "sensitivity",
        "specificity",
        "est_sensitivity",
        "est_specificity",
        "est_spammer_score",
        "quiz_accuracy",
        "n_votes",
    ]
    by_kind = ann.groupby("kind")[[c for c in cols if c in ann.columns]].mean()
    by_kind.insert(0, "workers", ann.groupby("kind").size())
    gallery = result.mitosis_images[1:] if figs.headline else result.mitosis_images
    consensus = pd.DataFrame(m.get("consensus_operating_points", {})).T
    blocks: list[Any] = [
        "Note: " + m["note"],
        f"The loop of Albarqouni et al. (2016): a three-scale AggNet detector is trained on "
        f"{st['n_train']} fields with reference points; its candidates on {st['n_crowd']} "
        f"more fields (above {st['candidate_threshold']}) become {m['n_tasks']} crowd tasks "
        f"({m['n_gold_tasks']} of them gold questions); {m['n_annotators']} simulated "
        f"workers vote ({st['votes_per_task']} votes per task); the aggregation layer "
        "refines the 0.33-scale network while inferring the truth. Baselines fine-tune "
        "the same network on majority-vote (AM-MV), GLAD (AM-GLAD) and reference (AM-GT) "
        f"labels. All are scored on the candidates of {m['n_test_fields']} held-out fields "
        f"(F1 at probability 0.5, a detection within {st['radius']:g} px of a reference "
        "point is a true positive; AUC over candidates), like the paper's Table IV.",
        metrics,
        "`truth_accuracy`: accuracy of the labels each model was trained on, over the "
        f"crowd tasks (majority vote of the raw votes: {m['truth_accuracy_mv']:.3f}). One "
        "seed; BENCHMARKS.md (`aggnet_loop`) repeats it over seeds.",
    ]
    if not consensus.empty:
        consensus.index.name = "consensus"
        blocks += [
            "The two consensus labels against the reference labels of the crowd tasks (the "
            "stars in the summary's ROC figure):",
            consensus,
        ]
    blocks += [
        "Workers by kind (means): true and estimated sensitivity/specificity, AggNet's "
        "spammer score (0 = votes independent of the truth) and accuracy on the gold "
        "questions.",
        by_kind,
        *([Gallery(gallery)] if gallery else []),
        Link(
            "mitosis_annotators.csv",
            "mitosis_annotators.csv",
            "One row per worker, with the measured sensitivity and specificity of their votes "
            "and 95 % intervals.",
        ),
    ]
    return Section("Mitosis detection and the crowd loop (AggNet, synthetic)", blocks)


def _benchmark_section(
    result: DemoResult, params: dict[str, Any], figs: DemoFigures
) -> list[Section]:
    acc = result.accuracy
    scored = acc[acc["status"] == "ok"]
    blocks: list[Any] = [
        "Bundled crowd data sets with gold labels (weather sentiment, music genre, sentiment "
        "polarity, entity linking): not medical, but they are where truth-inference methods "
        "can be checked against known answers. Gold labels are used only to score the "
        "methods, never in a fit (except by `gold-majority-vote`, which takes its weights "
        "from half of the gold items and is scored on the other half).",
    ]
    if not scored.empty:
        pivot = scored.pivot(index="method", columns="dataset", values="accuracy")
        pivot = pivot.reindex(
            index=[mt for mt in params["methods"] if mt in pivot.index],
            columns=[d for d in params["datasets"] if d in pivot.columns],
        )
        pivot.index.name = "method"
        blocks += [
            "Share of items whose consensus label equals the gold label (– : method not "
            "applicable, e.g. `sens-spec` needs two classes). One seed; the data sets are "
            "fixed, so the differences are descriptive.",
            pivot,
            *figs.accuracy,
        ]
    if figs.benchmark_roc:
        blocks += [
            "Each annotator against gold, as a point in ROC space with 95 % intervals, next "
            "to the consensus of majority vote and Dawid–Skene (binary data sets):",
            Gallery(figs.benchmark_roc),
        ]
    if figs.benchmark_forest:
        blocks += [
            "On the multi-class data sets, the annotators least accurate on gold, with 95 % "
            "intervals (an interval shows how many gold items the estimate rests on):",
            Gallery(figs.benchmark_forest),
        ]
    if not result.reliability_check.empty:
        blocks += [
            "Without gold, the spammer score (Raykar & Yu 2012; 0 = labels independent of "
            f"the true class) under the Dawid–Skene posteriors flags, among annotators with at "
            f"least {params['min_labels']} labels, the least reliable ones; their gold "
            "accuracy shows whether it found them:",
            result.reliability_check.set_index("dataset"),
        ]
    cols = ["n_labels", "consensus_agreement", "spammer_score", "gold_accuracy"]
    least: list[Any] = []
    for name, table in result.least_reliable.items():
        least += [f"`{name}`", table[[c for c in cols if c in table.columns]]]
    if least:
        blocks.append(Details("Least reliable annotators per data set", least))
    blocks.append(Details("The data sets", [result.datasets]))
    timing = acc.pivot(index="method", columns="dataset", values="fit_seconds")
    timing = timing.reindex(
        index=[mt for mt in params["methods"] if mt in timing.index],
        columns=[d for d in params["datasets"] if d in timing.columns],
    )
    timing.index.name = "method"
    blocks.append(Details("Fit time in seconds (wall clock)", [timing]))
    notes = acc[acc["note"] != ""][["dataset", "method", "status", "note"]].reset_index(drop=True)
    if not notes.empty:
        blocks.append(Details("Notes from the fits (warnings are recorded here)", [notes]))
    blocks.append(Link("accuracy.csv", "accuracy.csv", "One row per data set and method."))
    for name in result.annotators:
        blocks.append(
            Link(
                f"annotators_{name}.csv",
                f"annotators_{name}.csv",
                f"Every annotator of {name}, least reliable first.",
            )
        )
    return [Section("Crowd benchmark sets: evidence that the methods are right", blocks)]


def _simulated_section(result: DemoResult) -> Section:
    s = result.simulated
    o, c = s["ordinal_settings"], s["continuous_settings"]
    ordinal = result.simulated_ordinal.set_index("method")
    continuous = result.simulated_continuous.set_index("method")
    best_o = ordinal["exact_accuracy"].idxmax()
    best_c = continuous["mae"].idxmin()
    n_o, n_c = int(ordinal["n_items"].iloc[0]), int(continuous["n_items"].iloc[0])
    return Section(
        "Ordinal and continuous methods on simulated readers (known truth)",
        [
            "No bundled data set has ordinal or continuous labels with gold (LIDC malignancy "
            "has none), so these methods are scored on simulated readers whose truth is "
            f"known, drawn with the demo's seed ({s['seed']}). One draw: the differences "
            "are descriptive; BENCHMARKS.md (`ordinal_continuous`) repeats similar settings over "
            "seeds.",
            f"Simulated ordinal readers (known truth): {n_o} items, {o['n_classes']} grades, "
            f"{len(o['offsets'])} readers of whom {o['labels_per_item']} read each item; "
            f"severity offsets {o['offsets']} (grades; negative = lenient, positive = "
            f"strict) and noise {o['noise']}. Exact and within-one accuracy against the "
            "true grade; Dawid–Skene and majority vote treat the grades as unordered classes:",
            ordinal[["kind", "exact_accuracy", "within_one_accuracy", "fit_seconds"]],
            f"Best exact accuracy: `{best_o}` ({ordinal.loc[best_o, 'exact_accuracy']:.3f}; "
            f"majority vote {ordinal.loc['majority-vote', 'exact_accuracy']:.3f}). The "
            "graded-response model's largest error on a reader's offset is "
            f"{s['graded_response_offset_max_error']:.2f} grades.",
            f"Simulated continuous readers (known truth): {n_c} items with true values N(0, 1), "
            f"{len(c['bias'])} readers who each read every item as scale · truth + bias + "
            f"noise; biases {c['bias']}, scales {c['scale']}, precisions {c['precision']}. "
            "Error of the consensus value against the truth:",
            continuous[["mae", "rmse", "fit_seconds"]],
            f"Lowest MAE: `{best_c}` ({continuous.loc[best_c, 'mae']:.3f}, mean "
            f"{continuous.loc['mean', 'mae']:.3f}); Raykar's largest error on a reader's "
            f"bias is {s['raykar_bias_max_error']:.2f}.",
            Link(
                "simulated_ordinal.csv",
                "simulated_ordinal.csv",
                "One row per method: exact and within-one accuracy (simulated readers).",
            ),
            Link(
                "simulated_continuous.csv",
                "simulated_continuous.csv",
                "One row per method: MAE and RMSE (simulated readers).",
            ),
        ],
    )


def demo_sections(result: DemoResult, params: dict[str, Any], figs: DemoFigures) -> list[Section]:
    """The report's sections: summary, LIDC-IDRI, the crowd loop, the benchmarks, the run."""
    sections = [_summary_section(result, params, figs)]
    if result.lidc_summary:
        sections.append(_lidc_section(result))
    if result.masks:
        sections.append(_masks_section(result, figs))
    if result.mitosis:
        sections.append(_mitosis_section(result, figs))
    if not result.accuracy.empty and (result.accuracy["dataset"] != "lidc_malignancy").any():
        sections += _benchmark_section(result, params, figs)
    if result.simulated:
        sections.append(_simulated_section(result))
    if result.notes:
        sections.append(Section("Skipped", list(result.notes)))
    if figs.note:
        sections.append(Section("Figures", [figs.note]))
    sections.append(
        Section(
            "Reproducibility",
            [
                f"crowdmed {__version__}; seed (`random_state`) {params['random_state']}; "
                f"parts {params['parts']}; methods {params['methods']}; data sets "
                f"{params['datasets']}. Total time {result.elapsed_seconds:.1f} s.",
                Link(
                    "results.json",
                    "results.json",
                    "Parameters, environment, timings and every headline number.",
                ),
            ],
        )
    )
    return sections
