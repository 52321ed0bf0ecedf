"""Why ``crowdmed`` falls behind ActiveLab on NIH late in the relabelling runs: a diagnosis.

Development runs of :mod:`relabel` (same loop, same data) on seeds 0-14 only, never on the
seeds of the reported verdicts. Two parts:

* A snapshot: seed 0, ``crowdmed`` run up to 2,400 extra labels on NIH (the first budget where
  it is worse than ActiveLab after Holm–Bonferroni in the seeds 5-14 run). At that state it
  reports how many items hold 1, 2 and 3 labels, how many eligible items have a look-ahead
  gain beyond ActiveLab's tie-break, which items each score picks, CROWDLAB's model weight and
  the gold rate of the class a single label names, by label and by classifier probability.
* Variants of the ``crowdmed`` score, swapped in for the private scoring function, compared
  with ActiveLab per budget (paired over seeds, Holm–Bonferroni) and in labels needed:
  ``current`` (the library's score); ``em_truth`` (the truth drawn from the EM posterior,
  model prior included, instead of CROWDLAB's); ``ds_truth`` (EM confusion matrices without
  the model: Dawid–Skene posterior with the class shares as prior); ``shrunk_truth``
  (CROWDLAB's posterior with ActiveLab's pseudo-label of mean annotator weight at ``1/K``, so a
  label from a low-weight reader is trusted less); ``shrunk_truth_one`` (the same, one-label
  look-ahead only). Every variant keeps CROWDLAB's pooling rule and current consensus.

Run from the repository root (two processes, about 15 min on the shared machine)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/relabel_variants.py

It writes ``benchmarks/results/relabel_variants.json``, which ``benchmarks/relabel.py``
quotes in its section.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relabel as B
from _report import REPO, write_json
from crowdmed.quality import label_quality, relabel_scores
from crowdmed.quality import relabel as R
from crowdmed.quality.relabel import annotator_confusions

VARIANTS = ("current", "em_truth", "ds_truth", "shrunk_truth", "shrunk_truth_one")
DEV_SEEDS = tuple(range(15))
OUT = REPO / "benchmarks" / "results" / "relabel_variants.json"
_CURRENT = R._crowdmed


def _gain(post, total, p_consensus, readers, truth):
    """R._accuracy_gain with the truth drawn from ``truth`` instead of ``post``."""
    n, k = post.shape
    rows = np.arange(n)
    share = np.full((k, k), (1.0 - p_consensus) / max(k - 1, 1))
    np.fill_diagonal(share, p_consensus)
    pooled = total[:, None] * post
    after = np.zeros(n)
    for said in np.ndindex(*(k,) * len(readers)):
        shift = sum(w[:, None] * share[lab] for lab, (_, w) in zip(said, readers, strict=True))
        top = (pooled + shift).argmax(axis=1)
        chance = truth[rows, top]
        for lab, (conf, _) in zip(said, readers, strict=True):
            chance = chance * conf[rows, top, lab]
        after += chance
    return after - truth[rows, post.argmax(axis=1)]


def _flat_e_step(cl, conf, log_prior_row):
    """Dawid–Skene posterior from confusion matrices and one class prior for every item."""
    k = conf.shape[1]
    log_conf = np.log(np.clip(conf, 1e-12, None))
    log_post = np.tile(log_prior_row, (cl.n_items, 1))
    said = log_conf[cl.annotators, :, cl.labels]
    for j in range(k):
        log_post[:, j] += np.bincount(cl.items, weights=said[:, j], minlength=cl.n_items)
    log_post -= log_post.max(axis=1, keepdims=True)
    p = np.exp(log_post)
    return p / p.sum(axis=1, keepdims=True)


def make_variant(variant: str):
    """A replacement of ``R._crowdmed`` (same signature) for one variant."""
    if variant == "current":
        return _CURRENT

    def crowdmed(cl, pp, pool, assign, n_iter, strength):
        k = pp.shape[1]
        post, total, weights, p_consensus, temperature = R._crowdlab_state(cl, pp)
        em_post, conf, _ = R._fit_confusions(cl, R._log_prior(pp, temperature), n_iter, strength)
        known = np.isfinite(weights)
        if variant == "em_truth":
            truth = em_post
        elif variant == "ds_truth":
            truth = _flat_e_step(cl, conf, np.log(np.clip(em_post.mean(axis=0), 1e-12, None)))
        else:  # shrunk_truth*: ActiveLab's pseudo-label of mean weight at 1/K
            mean_w = float(np.mean(weights[known])) if known.any() else 1.0
            truth = (total[:, None] * post + mean_w / k) / (total + mean_w)[:, None]
        reliability = np.einsum("k,akk->a", em_post.mean(axis=0), conf)
        w = np.where(known, weights, np.mean(weights[known]) if known.any() else 1.0)
        flat = np.column_stack([conf.reshape(cl.n_annotators, k * k), w])
        pool_sum, pool_n = pool.total(flat), pool.count.astype(np.float64)
        chosen = np.full(cl.n_items, -1)
        if assign:
            chosen = pool.best(reliability)
            first = (conf[np.maximum(chosen, 0)], w[np.maximum(chosen, 0)])
            pool_sum = pool_sum - flat[np.maximum(chosen, 0)] * (chosen >= 0)[:, None]
            pool_n = pool_n - (chosen >= 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = pool_sum / pool_n[:, None]
        average = (
            np.nan_to_num(mean[:, :-1], nan=1.0 / k).reshape(cl.n_items, k, k),
            np.nan_to_num(mean[:, -1], nan=1.0),
        )
        if not assign:
            first = average
        gain = _gain(post, total, p_consensus, [first], truth)
        if k <= R._LOOKAHEAD_MAX_K and variant != "shrunk_truth_one":
            two = _gain(post, total, p_consensus, [first, average], truth) / 2.0
            gain = np.where(pool.count >= 2, np.maximum(gain, two), gain)
        gain = gain + R._TIE_BREAK * (1.0 - R._activelab(cl, pp)[0])
        gain = np.where(pool.count > 0, gain, 0.0)
        return gain, post, reliability, chosen, temperature

    return crowdmed


# ----------------------------------------------------------------------------- snapshot
def snapshot(task: B.Task, seed: int = 0, stop: int = 2400) -> dict:
    """The state of a ``crowdmed`` run at ``stop`` extra labels and what each score picks."""
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(seed)
    full, gold = task.labels, task.gold
    n_ann = full.shape[1]
    current, held = B.first_annotations(full, rng)
    extra = 0
    while True:  # the loop of relabel.run, stopped at `stop`
        mv = B.majority(current, task.n_classes, rng)
        probs = B.oof_probs(task.features, mv, task.n_classes, task.c, seed)
        B.consensus(current, probs, task.n_classes, rng)
        if extra >= stop:
            break
        r = relabel_scores(current, probs, method="crowdmed", available=held)
        picks = r.select(task.batch)
        draw = np.where(held[picks], rng.random((len(picks), n_ann)), np.inf)
        ans = draw.argmin(axis=1)
        current[picks, ans] = full[picks, ans]
        held[picks, ans] = False
        extra += len(picks)
    n = (current >= 0).sum(axis=1)
    pos = np.where(current >= 0, current, 0).sum(axis=1)
    cons = label_quality(current, probs, random_state=np.random.default_rng(0)).consensus
    ra = relabel_scores(current, probs, method="activelab", available=held)
    rc = relabel_scores(current, probs, method="crowdmed", available=held)
    el = rc.eligible
    beyond = rc.scores - R._TIE_BREAK * ra.scores  # the look-ahead gain alone
    pa, pc = ra.select(task.batch), rc.select(task.batch)
    cl, pp = R._check_inputs(current, probs)
    post, total, weights, p_consensus, temperature = R._crowdlab_state(cl, pp)
    w_items = np.bincount(
        cl.items, weights=np.nan_to_num(weights)[cl.annotators], minlength=cl.n_items
    )
    em = annotator_confusions(current, probs)

    def picked(p: np.ndarray) -> dict:
        return {
            "n_labels": np.bincount(n[p], minlength=4).tolist(),
            "split_1_1": int(np.sum((n[p] == 2) & (pos[p] == 1))),
            "consensus_wrong": int(np.sum(cons[p] != gold[p])),
        }

    single = []
    for said in (0, 1):
        s = el & (n == 1) & (pos == said)
        bins = np.digitize(probs[s, 1], [0.2, 0.35, 0.5, 0.65, 0.8])
        idx = np.flatnonzero(s)
        single.append(
            {
                "label": said,
                "items": int(s.sum()),
                "crowdlab_p_label": float(post[idx, said].mean()),
                "gold_rate_label": float(np.mean(gold[idx] == said)),
                "by_model": [
                    {
                        "p1_low": [0.0, 0.2, 0.35, 0.5, 0.65, 0.8][b],
                        "items": int(np.sum(bins == b)),
                        "gold_positive": float(gold[idx[bins == b]].mean()),
                        "crowdlab_p1": float(post[idx[bins == b], 1].mean()),
                        "em_p1": float(em.posteriors[idx[bins == b], 1].mean()),
                    }
                    for b in range(6)
                    if np.any(bins == b)
                ],
            }
        )
    return {
        "seed": seed,
        "extra": extra,
        "items_by_n_labels": np.bincount(n, minlength=4).tolist(),
        "eligible": int(el.sum()),
        "gain_positive": int(np.sum(el & (beyond > 1e-9))),
        "gain_negative": int(np.sum(el & (beyond < -1e-9))),
        "picks_gain_nonzero": int(np.sum(np.abs(beyond[pc]) > 1e-9)),
        "overlap": len(np.intersect1d(pa, pc)),
        "picked": {"activelab": picked(pa), "crowdmed": picked(pc)},
        "model_weight": float(np.median(total - w_items)),
        "p_consensus": p_consensus,
        "temperature": temperature,
        "gold_positive": float(gold.mean()),
        "labels_positive": float((full == 1).sum() / (full >= 0).sum()),
        "em_sensitivity": em.confusion[:, 1, 1].tolist(),
        "em_specificity": em.confusion[:, 0, 0].tolist(),
        "single": single,
    }


# ----------------------------------------------------------------------------- variants
def compare(task: B.Task, variants: tuple[str, ...], seeds: tuple[int, ...]) -> dict:
    """Curves of ActiveLab, random and every variant; the verdicts against ActiveLab."""
    warnings.simplefilter("ignore")
    curves: dict[str, dict[str, list[np.ndarray]]] = {"acc": {}, "acc_em": {}}
    spent = None
    runs = [("activelab", "current"), ("random", "current")]
    runs += [(s, v) for v in variants for s in ("crowdmed", "crowdmed_assign")]
    for s, v in runs:
        R._crowdmed = make_variant(v)
        name = s if s in ("activelab", "random") else f"{s}:{v}"
        for seed in seeds:
            t = time.perf_counter()
            sp_, acc, acc_em = B.run(task, s, seed)
            spent = sp_ if spent is None or len(sp_) > len(spent) else spent
            curves["acc"].setdefault(name, []).append(acc)
            curves["acc_em"].setdefault(name, []).append(acc_em)
            print(f"{task.name} {name} seed {seed}: {time.perf_counter() - t:.1f} s", flush=True)
    R._crowdmed = _CURRENT
    out = {}
    for kind, by in curves.items():
        n = min(len(c) for v in by.values() for c in v)
        a = {k: np.array([c[:n] for c in v]) for k, v in by.items()}
        target = float(np.mean([x[:, -1].mean() for x in a.values()])) - 0.005
        need = {k: np.array([B.needed(spent[:n], c, target) for c in x]) for k, x in a.items()}
        res = {}
        for k, x in a.items():
            if k in ("activelab", "random"):
                continue
            d = x - a["activelab"]
            fam = B.budget_family(d)
            res[k] = {
                "holm_worse": fam["holm"].count("worse"),
                "holm_better": fam["holm"].count("better"),
                "uncorrected_worse": fam["uncorrected"].count("worse"),
                "uncorrected_better": fam["uncorrected"].count("better"),
                "worst_budget": int(spent[int(np.argmin(d.mean(axis=0)))]),
                "worst_diff": float(d.mean(axis=0).min()),
                "fewer_than_random": B.paired_ci(1.0 - need[k] / need["random"]),
                "fewer_than_activelab": B.paired_ci(1.0 - need[k] / need["activelab"]),
            }
        out[kind] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path,
        default=Path(os.environ.get("CROWDMED_DATA", REPO.parent / "shared" / "data")),
    )  # fmt: skip
    ap.add_argument("--seeds", type=int, default=len(DEV_SEEDS), help="seeds 0..n-1 (<= 15)")
    args = ap.parse_args()
    if not 1 <= args.seeds <= len(DEV_SEEDS):
        raise SystemExit(f"--seeds must be between 1 and {len(DEV_SEEDS)}; the others are fresh.")
    seeds = DEV_SEEDS[: args.seeds]
    t0, cpu0 = time.perf_counter(), time.process_time()
    nih, labelme = B.load_nih(args.data), B.load_labelme(args.data)
    with ProcessPoolExecutor(2) as ex:  # the two data sets side by side, one thread each
        jobs = {
            "nih": ex.submit(compare, nih, VARIANTS, seeds),
            "labelme": ex.submit(compare, labelme, ("current", "shrunk_truth"), seeds),
        }
        result = {"seeds": list(seeds), "snapshot": snapshot(nih)}
        result.update({k: j.result() for k, j in jobs.items()})
    result["wall_s"] = time.perf_counter() - t0
    result["cpu_s"] = time.process_time() - cpu0
    write_json(OUT, result)
    print(OUT)


if __name__ == "__main__":
    main()
