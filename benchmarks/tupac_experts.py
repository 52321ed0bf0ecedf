"""Two pathologists as a binary aggregation case: the TUPAC16 alternative labels.

Data: ``$CROWDMED_DATA/tupac_mitosis_alt_labels`` (``CROWDMED_DATA`` defaults to
``<repo>/../shared/data``): 12,482 candidate cells in the 73 images of the TUPAC16 auxiliary
training set, each labelled mitotic figure / hard negative by two pathologists (Bertram et al.
2020), plus the database's final (agreed) label, reached in a joint review where they disagreed.

Reports, with library functions only:

* agreement: raw agreement, Cohen's kappa (``crowdmed.quality.cohen_kappa_matrix``, checked
  against ``sklearn.metrics.cohen_kappa_score``), Krippendorff's alpha;
* sensitivity / specificity of each expert (``crowdmed.quality.sensitivity_specificity``)
  against the final label, against majority vote (ties to hard negative, or seeded coin flips),
  against Dawid-Skene and BinarySensSpec consensus (EM from the majority vote, and from random
  starts to expose what two raters cannot identify), and against Dawid-Skene with the final
  label clamped on a random 10 % of the cells (semi-supervised);
* where the disagreement concentrates: by final class, by direction, by image (a chi-square
  test of homogeneity over the 73 images, the share of disagreements in the worst images, and
  the rank correlation with an image's share of mitoses), and how the consensus review
  relates to the final label.

Usage::

    python benchmarks/tupac_experts.py [--seeds 5] [--markdown PATH] [--json PATH]

Writes the ``tupac_experts`` section of ``BENCHMARKS.md`` and
``benchmarks/results/tupac_experts.json`` (atomically). Runs in a few seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, machine_line, update_section, write_json
from crowdmed.aggregation import BinarySensSpec, DawidSkene, MajorityVote
from crowdmed.data import CrowdLabels, load_tupac_alt_labels, load_tupac_alt_table
from crowdmed.exceptions import ConvergenceWarning
from crowdmed.quality import cohen_kappa_matrix, krippendorff_alpha, sensitivity_specificity

DATASET = "tupac_mitosis_alt_labels"
GOLD_SHARE = 0.10


def _folder() -> Path:
    root = Path(os.environ.get("CROWDMED_DATA", REPO.parent / "shared" / "data"))
    folder = root / DATASET
    if not folder.is_dir():
        raise SystemExit(
            f"TUPAC alternative labels not found at {folder}. Set CROWDMED_DATA to the folder "
            f"that holds '{DATASET}/' (default <repo>/../shared/data)."
        )
    return folder


def _ss(cl: CrowdLabels, reference: np.ndarray) -> dict[str, list[float]]:
    sens, spec = sensitivity_specificity(cl, reference)
    return {"sensitivity": sens.tolist(), "specificity": spec.tolist()}


def _consensus_scores(labels: np.ndarray, gold: np.ndarray, disagree: np.ndarray) -> dict[str, Any]:
    return {
        "accuracy_all": float((labels == gold).mean()),
        "accuracy_disagreements": float((labels[disagree] == gold[disagree]).mean()),
        "n_positive": int(labels.sum()),
    }


def _fit(model: Any, cl: CrowdLabels, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(cl, **kw)


def run(seeds: int) -> dict[str, Any]:
    folder = _folder()
    t0 = time.perf_counter()
    cl = load_tupac_alt_labels(folder)
    table = load_tupac_alt_table(folder)
    assert cl.gold is not None
    gold = cl.gold
    dense = cl.to_dense()
    both = (dense >= 0).all(axis=1)
    e1, e2 = dense[:, 0], dense[:, 1]
    disagree = both & (e1 != e2)
    out: dict[str, Any] = {
        "n_cells": cl.n_items,
        "n_images": int(table["slide"].nunique()),
        "n_both": int(both.sum()),
        "n_final_mitoses": int(gold.sum()),
        "n_disagree": int(disagree.sum()),
        "n_expert_positive": [int((e1 == 1).sum()), int((e2 == 1).sum())],
        "crosstab": pd.crosstab(e1[both], e2[both]).to_numpy().tolist(),  # rows: expert 1
    }

    # ---------------------------------------------------------------- agreement
    p_o = float((e1[both] == e2[both]).mean())
    kappa = float(cohen_kappa_matrix(cl)[0, 1])
    from sklearn.metrics import cohen_kappa_score

    kappa_sk = float(cohen_kappa_score(e1[both], e2[both]))
    out["agreement"] = {
        "raw": p_o,
        "n_agree": int((e1[both] == e2[both]).sum()),
        "cohen_kappa": kappa,
        "cohen_kappa_sklearn": kappa_sk,
        "krippendorff_alpha": float(krippendorff_alpha(cl)),
        "both_of_either": float(((e1 == 1) & (e2 == 1)).sum() / ((e1 == 1) | (e2 == 1)).sum()),
        "positive_agreement": float(
            2 * ((e1 == 1) & (e2 == 1)).sum() / ((e1[both] == 1).sum() + (e2[both] == 1).sum())
        ),
    }

    # ---------------------------------------------------------------- references
    refs: dict[str, dict[str, Any]] = {}
    refs["final label (gold)"] = {"labels": gold, **_ss(cl, gold)}
    mv = MajorityVote().fit(cl)  # ties -> lowest class index = hard negative
    refs["MV, ties -> hard negative"] = {"labels": mv.labels_, **_ss(cl, mv.labels_)}
    mv_rand = []
    for s in range(seeds):
        lab = MajorityVote(random_state=s).fit(cl).labels_
        mv_rand.append({"labels": lab, **_ss(cl, lab)})
    refs["MV, ties by coin flip"] = {"runs": mv_rand}
    ds = _fit(DawidSkene(), cl)
    refs["Dawid-Skene (EM from MV)"] = {
        "labels": ds.labels_,
        "posteriors": ds.posteriors_,
        **_ss(cl, ds.labels_),
        "model_sensitivity": ds.confusion_[:, 1, 1].tolist(),
        "model_specificity": ds.confusion_[:, 0, 0].tolist(),
        "model_prevalence": float(ds.priors_[1]),
        "n_iter": int(ds.n_iter_),
        "log_likelihood": float(ds.log_likelihoods_[-1]),
    }
    bss = _fit(BinarySensSpec(), cl)
    refs["BinarySensSpec (EM from MV)"] = {
        "labels": bss.labels_,
        **_ss(cl, bss.labels_),
        "model_sensitivity": bss.sensitivity_.tolist(),
        "model_specificity": bss.specificity_.tolist(),
        "model_prevalence": float(bss.prevalence_),
        "n_iter": int(bss.n_iter_),
        "log_likelihood": float(bss.log_likelihoods_[-1]),
    }
    ds_random = []
    for s in range(seeds):
        m = _fit(DawidSkene(init="random", random_state=s), cl)
        ds_random.append(
            {
                "labels": m.labels_,
                **_ss(cl, m.labels_),
                "model_sensitivity": m.confusion_[:, 1, 1].tolist(),
                "model_specificity": m.confusion_[:, 0, 0].tolist(),
                "model_prevalence": float(m.priors_[1]),
                "log_likelihood": float(m.log_likelihoods_[-1]),
            }
        )
    refs["Dawid-Skene (random starts)"] = {"runs": ds_random}
    semi = []
    for s in range(seeds):
        rng = np.random.default_rng(s)
        clamp = np.full(cl.n_items, -1)
        pick = rng.random(cl.n_items) < GOLD_SHARE
        clamp[pick] = gold[pick]
        m = _fit(DawidSkene(), cl, gold=clamp)
        rest = ~pick
        semi.append(
            {
                "labels": m.labels_,
                **_ss(cl, m.labels_),
                "model_sensitivity": m.confusion_[:, 1, 1].tolist(),
                "model_specificity": m.confusion_[:, 0, 0].tolist(),
                "model_prevalence": float(m.priors_[1]),
                "accuracy_unclamped": float((m.labels_[rest] == gold[rest]).mean()),
                "accuracy_unclamped_disagreements": float(
                    (m.labels_[rest & disagree] == gold[rest & disagree]).mean()
                ),
            }
        )
    refs[f"Dawid-Skene, final label on {GOLD_SHARE:.0%} of cells"] = {"runs": semi}
    for ref in refs.values():
        for run_ in ref.get("runs", [ref]):
            run_.update(_consensus_scores(run_["labels"], gold, disagree))
    # best any labels-only consensus can do: one label per (expert 1, expert 2) pattern
    best = 0
    for a, b in ((0, 1), (1, 0)):
        cells = both & (e1 == a) & (e2 == b)
        best += max(int(gold[cells].sum()), int((1 - gold[cells]).sum()))
    out["best_pattern_accuracy_disagreements"] = best / int(disagree.sum())
    out["references"] = refs

    # ---------------------------------------------------------------- where disagreement is
    conc: dict[str, Any] = {}
    conc["by_final_class"] = {
        name: {"n": int((gold == k).sum()), "disagree": int(disagree[gold == k].sum())}
        for k, name in enumerate(cl.classes)
    }
    conc["by_direction"] = {
        f"expert1={cl.classes[a]}, expert2={cl.classes[b]}": {
            "n": int((both & (e1 == a) & (e2 == b)).sum()),
            "final_mitoses": int(gold[both & (e1 == a) & (e2 == b)].sum()),
        }
        for a, b in ((1, 0), (0, 1))
    }
    per = (
        pd.DataFrame({"slide": table["slide"], "dis": disagree, "mit": gold == 1, "both": both})
        .loc[both]
        .groupby("slide")
        .agg(n=("dis", "size"), disagree=("dis", "sum"), mitoses=("mit", "sum"))
    )
    per["rate"] = per["disagree"] / per["n"]
    chi2, p_chi, dof, _ = stats.chi2_contingency(
        np.stack([per["disagree"], per["n"] - per["disagree"]], axis=1)
    )
    ordered = per.sort_values("disagree", ascending=False)
    top = max(1, round(0.1 * len(per)))
    rho, p_rho = stats.spearmanr(per["rate"], per["mitoses"] / per["n"])
    rho_n, p_rho_n = stats.spearmanr(per["rate"], per["n"])
    conc["by_image"] = {
        "n_images": len(per),
        "rate_median": float(per["rate"].median()),
        "rate_q10_q90": [float(per["rate"].quantile(0.1)), float(per["rate"].quantile(0.9))],
        "rate_min_max": [float(per["rate"].min()), float(per["rate"].max())],
        "chi2": float(chi2),
        "dof": int(dof),
        "p_value": float(p_chi),
        "top10pct_images": int(top),
        "top10pct_share_of_disagreements": float(
            ordered["disagree"].iloc[:top].sum() / per["disagree"].sum()
        ),
        "top10pct_share_of_cells": float(ordered["n"].iloc[:top].sum() / per["n"].sum()),
        "spearman_rate_vs_mitosis_share": [float(rho), float(p_rho)],
        "spearman_rate_vs_n_cells": [float(rho_n), float(p_rho_n)],
        "worst": [
            {"slide": str(s), "n": int(r.n), "disagree": int(r.disagree), "rate": float(r.rate)}
            for s, r in per.sort_values("rate", ascending=False).head(5).iterrows()
        ],
    }
    cons = table["consensus"].notna().to_numpy()
    cons_lab = (table["consensus"] == "mitotic_figure").to_numpy().astype(int)
    conc["consensus_review"] = {
        "n_reviewed": int(cons.sum()),
        "n_reviewed_disagreements": int((cons & disagree).sum()),
        "n_reviewed_agreements": int((cons & both & ~disagree).sum()),
        "consensus_equals_final": int((cons & (cons_lab == gold)).sum()),
        "agreed_cells_overturned_by_consensus": int(
            (cons & both & ~disagree & (cons_lab != e1)).sum()
        ),
        "agreed_cells_final_differs_from_experts": int((both & ~disagree & (gold != e1)).sum()),
    }
    out["concentration"] = conc
    out["seconds"] = time.perf_counter() - t0
    return out


def _ms(values: list[float], digits: int = 3) -> str:
    a = np.asarray(values, dtype=float)
    if len(a) > 1:
        return f"{a.mean():.{digits}f} ± {a.std(ddof=1):.{digits}f}"
    return f"{a[0]:.{digits}f}"


def markdown(res: dict[str, Any], seeds: int) -> str:
    ag = res["agreement"]
    ct = res["crosstab"]
    lines = [
        "## Two pathologists on TUPAC16 mitosis candidates (`tupac_experts`)",
        "",
        f"Data: `{DATASET}` (Bertram et al. 2020, alternative labels of the TUPAC16 auxiliary "
        f"set): {res['n_cells']:,} candidate cells in {res['n_images']} images, labelled "
        "mitotic figure / hard negative by two pathologists independently "
        f"({res['n_both']:,} cells by both; expert 2 lacks one label); the database's final "
        f"label has {res['n_final_mitoses']:,} mitoses. Script: "
        f"`python benchmarks/tupac_experts.py --seeds {seeds}` (deterministic apart from the "
        f"listed seeds 0..{seeds - 1}; ran in {res['seconds']:.1f} s). {machine_line()}.",
        "",
        "**Agreement.** Cross-table (rows expert 1, columns expert 2; hard negative, mitosis): "
        f"{ct}. Raw agreement {ag['raw']:.4f} ({ag['n_agree']:,} / {res['n_both']:,}); "
        f"Cohen's kappa {ag['cohen_kappa']:.4f} (`crowdmed.quality.cohen_kappa_matrix`; "
        f"scikit-learn `cohen_kappa_score` {ag['cohen_kappa_sklearn']:.4f}); Krippendorff's "
        f"alpha {ag['krippendorff_alpha']:.4f}; positive (mitosis) agreement "
        f"2·both / (pos₁ + pos₂) = {ag['positive_agreement']:.3f}, i.e. on average about that "
        "share of one expert's mitosis calls is confirmed by the other, and both call "
        f"{ag['both_of_either']:.3f} of the cells that either calls a mitosis. The high raw "
        "agreement is mostly shared hard negatives.",
        "",
        "**Sensitivity / specificity of each expert against each consensus** "
        f"(`crowdmed.quality.sensitivity_specificity`; mean ± sd over {seeds} seeds where a "
        "seed is involved). *acc all / acc disagr.*: accuracy of the consensus itself against "
        "the final label on all cells / on the "
        f"{res['n_disagree']:,} cells where the experts disagree.",
        "",
        "| reference | sens. expert 1 | spec. expert 1 | sens. expert 2 | spec. expert 2 "
        "| acc all | acc disagr. | consensus mitoses |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ref in res["references"].items():
        if name == "Dawid-Skene (random starts)":
            continue  # its own table below: the runs land on different solutions
        runs = ref.get("runs", [ref])
        cells = [
            _ms([r["sensitivity"][0] for r in runs]),
            _ms([r["specificity"][0] for r in runs]),
            _ms([r["sensitivity"][1] for r in runs]),
            _ms([r["specificity"][1] for r in runs]),
            _ms([r["accuracy_all"] for r in runs]),
            _ms([r["accuracy_disagreements"] for r in runs]),
            _ms([float(r["n_positive"]) for r in runs], 1).replace(".0", ""),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ds = res["references"]["Dawid-Skene (EM from MV)"]
    bss = res["references"]["BinarySensSpec (EM from MV)"]
    rnd = res["references"]["Dawid-Skene (random starts)"]["runs"]
    semi = res["references"][f"Dawid-Skene, final label on {GOLD_SHARE:.0%} of cells"]["runs"]
    ll = [r["log_likelihood"] for r in rnd]
    near = [i for i, v in enumerate(ll) if abs(v - ds["log_likelihood"]) < 1.0]
    gap = max((abs(ll[i] - ds["log_likelihood"]) for i in near), default=float("nan"))
    gold_ss = res["references"]["final label (gold)"]
    lines += [
        "",
        "Model parameters (the EM estimates, not the empirical rates above): Dawid-Skene from "
        f"MV: sensitivity {np.round(ds['model_sensitivity'], 3).tolist()}, specificity "
        f"{np.round(ds['model_specificity'], 3).tolist()}, prevalence "
        f"{ds['model_prevalence']:.3f}; BinarySensSpec from MV: sensitivity "
        f"{np.round(bss['model_sensitivity'], 3).tolist()}, specificity "
        f"{np.round(bss['model_specificity'], 3).tolist()}, prevalence "
        f"{bss['model_prevalence']:.3f}; log-likelihood {ds['log_likelihood']:.2f} "
        "(Dawid-Skene, with its default smoothing 0.01). Dawid-Skene from random starts "
        '(`init="random"`):',
        "",
        "| seed | log-likelihood | prevalence | sensitivity (e1, e2) | specificity (e1, e2) "
        "| consensus mitoses | acc all |",
        "|---:|---:|---:|---|---|---:|---:|",
        *[
            f"| {i} | {r['log_likelihood']:.2f} | {r['model_prevalence']:.3f} | "
            f"{np.round(r['model_sensitivity'], 3).tolist()} | "
            f"{np.round(r['model_specificity'], 3).tolist()} | {r['n_positive']:,} | "
            f"{r['accuracy_all']:.3f} |"
            for i, r in enumerate(rnd)
        ],
        "",
        f"Runs {', '.join(str(i) for i in near)} end within {gap:.2f} of the log-likelihood "
        "of the start from MV (a gap from the smoothing prior) but at other parameters, "
        "some of them label-swapped (prevalence 0.75, accuracy near 0): they lie on the ridge "
        "of equally likely two-rater solutions. A run ending far lower stopped at a saddle "
        "point. With the final label clamped on a random "
        f"{GOLD_SHARE:.0%} of cells, Dawid-Skene's consensus reaches accuracy "
        f"{_ms([r['accuracy_unclamped'] for r in semi])} on the other cells "
        f"({_ms([r['accuracy_unclamped_disagreements'] for r in semi])} on their "
        f"disagreements); the empirical truth is sensitivity "
        f"{np.round(gold_ss['sensitivity'], 3).tolist()} and specificity "
        f"{np.round(gold_ss['specificity'], 3).tolist()} against the final label.",
        "",
        "**What each consensus can identify with two raters.** A 2 × 2 table of two raters "
        "has 3 free cells, while the two-rater latent-class model (Dawid-Skene, or "
        "BinarySensSpec = the binary Raykar model) has 5 parameters (prevalence and two "
        "sensitivity/specificity pairs): it is not identifiable, so the EM answer is one point "
        "of a ridge of equally likely solutions, chosen by the initialisation (compare the "
        "random starts). Majority vote with two raters is the agreement cells plus a tie rule: "
        "with ties to hard negative, every MV positive is a cell both experts called mitosis, "
        "so each expert's sensitivity against MV is 1 by construction and only their "
        "specificities differ (they measure how often each one says mitosis alone); with coin "
        "flips each expert gets about half of their solo calls credited. Whatever it does, a "
        "consensus built from the two label columns alone gives one label to all cells of a "
        "disagreement pattern (expert 1 yes / expert 2 no, or the reverse), so its accuracy on "
        "the disagreements is at most "
        f"{res['best_pattern_accuracy_disagreements']:.3f} (calling each pattern by its "
        "majority final label). Only the final (reviewed) label, or some of it clamped as gold, "
        "tells the experts' error rates apart; even then it is a consensus of these same "
        "two experts, not an independent truth.",
        "",
        "**Where the disagreement concentrates.**",
        "",
        "| cells | n | disagreements | rate |",
        "|---|---:|---:|---:|",
    ]
    conc = res["concentration"]
    for name, v in conc["by_final_class"].items():
        lines.append(
            f"| final label {name} | {v['n']:,} | {v['disagree']:,} | "
            f"{v['disagree'] / v['n']:.3f} |"
        )
    lines.append("")
    lines.append("| pattern | n | final label mitosis |")
    lines.append("|---|---:|---:|")
    for name, v in conc["by_direction"].items():
        lines.append(f"| {name} | {v['n']:,} | {v['final_mitoses']:,} |")
    im = conc["by_image"]
    cr = conc["consensus_review"]
    lines += [
        "",
        f"By image ({im['n_images']} images): the per-image disagreement rate has median "
        f"{im['rate_median']:.3f} (10th-90th percentile {im['rate_q10_q90'][0]:.3f}-"
        f"{im['rate_q10_q90'][1]:.3f}, range {im['rate_min_max'][0]:.3f}-"
        f"{im['rate_min_max'][1]:.3f}); chi-square test of one common rate: chi2 = "
        f"{im['chi2']:.1f}, dof {im['dof']}, p = {im['p_value']:.2g} (rough: many images have "
        "few candidates). The "
        f"{im['top10pct_images']} images with the most disagreements hold "
        f"{im['top10pct_share_of_disagreements']:.1%} of them and "
        f"{im['top10pct_share_of_cells']:.1%} of the cells, so the bulk of the disagreements "
        "sits where the candidates are, not in a few bad images. Spearman correlation of an "
        "image's "
        f"disagreement rate with its share of final mitoses: rho = "
        f"{im['spearman_rate_vs_mitosis_share'][0]:.2f} (p = "
        f"{im['spearman_rate_vs_mitosis_share'][1]:.2g}); with its number of candidates: rho = "
        f"{im['spearman_rate_vs_n_cells'][0]:.2f} (p = {im['spearman_rate_vs_n_cells'][1]:.2g}). "
        "Highest rates: "
        + ", ".join(f"{w['slide']} {w['disagree']}/{w['n']}" for w in im["worst"])
        + ".",
        "",
        f"Consensus review: {cr['n_reviewed']:,} cells carry a consensus label — all "
        f"{cr['n_reviewed_disagreements']:,} disagreements plus {cr['n_reviewed_agreements']:,} "
        "cells the experts agreed on (the review overturned "
        f"{cr['agreed_cells_overturned_by_consensus']} of those); the consensus label "
        "equals the final label on "
        f"{cr['consensus_equals_final']:,} of the {cr['n_reviewed']:,}, and the final label "
        f"differs from two agreeing experts on {cr['agreed_cells_final_differs_from_experts']} "
        "cells. The final label is thus not simply the consensus label (the data do not say "
        "which step set it). The data hold only cell positions, image and labels — no "
        "image content — so disagreement cannot be related to morphology here.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds for ties, random starts, gold")
    ap.add_argument("--markdown", default="BENCHMARKS.md", help="markdown file to update")
    ap.add_argument("--json", default="benchmarks/results/tupac_experts.json", help="raw results")
    args = ap.parse_args(argv)
    res = run(args.seeds)
    md = markdown(res, args.seeds)
    print(md)
    raw = {k: v for k, v in res.items() if k != "references"}
    raw["references"] = {
        name: {key: val for key, val in ref.items() if key not in ("labels", "posteriors")}
        | (
            {"runs": [{k: v for k, v in r.items() if k != "labels"} for r in ref["runs"]]}
            if "runs" in ref
            else {}
        )
        for name, ref in res["references"].items()
    }
    raw["seeds"] = args.seeds
    raw["machine"] = machine_line()
    if args.markdown:
        update_section("tupac_experts", md, args.markdown)
    if args.json:
        write_json(args.json, raw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
