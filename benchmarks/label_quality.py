"""CROWDLAB label quality: crowdmed against cleanlab 2.9, speed and equality, and 1M labels.

Simulated crowd: ``--items`` items, ``--annotators`` annotators, each annotator labels an item
with probability ``--density`` (plus one guaranteed label per item), accuracies uniform in
[0.4, 0.95], K = 5 classes, classifier probabilities = softmax(noise + 2 * one-hot(truth)).
Both libraries get the same labels (cleanlab: the dense float matrix with NaN; crowdmed: the
COO triplets) and the same probabilities, with their default options. cleanlab runs once (it
takes much longer), crowdmed best of three. Then crowdmed alone on ``--big-labels`` labels
spread over many annotators (cleanlab's dense matrix would not fit), with its peak memory.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/label_quality.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, machine_line, update_section, write_json
from crowdmed.data.labels import CrowdLabels
from crowdmed.quality import label_quality

K = 5


def simulate(n_items: int, n_annotators: int, density: float, seed: int):
    """COO triplets (items, annotators, labels) and probabilities, never a dense matrix."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, K, n_items)
    acc = rng.uniform(0.4, 0.95, n_annotators)
    n_extra = rng.binomial(n_annotators - 1, density, n_items)
    items = np.repeat(np.arange(n_items), n_extra + 1)
    # distinct annotators per item: a random offset walk modulo n_annotators
    first = rng.integers(0, n_annotators, n_items)
    start = np.repeat(np.cumsum(n_extra + 1) - (n_extra + 1), n_extra + 1)
    step = np.arange(len(items)) - start
    ann = (first[items] + step) % n_annotators
    right = rng.random(len(items)) < acc[ann]
    labels = np.where(right, truth[items], rng.integers(0, K, len(items)))
    logits = rng.normal(size=(n_items, K)) + 2.0 * np.eye(K)[truth]
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return items, ann, labels, probs


def crowdmed_time(cl: CrowdLabels, probs: np.ndarray, repeats: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = label_quality(cl, probs, random_state=0)
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--density", type=float, default=0.06)
    ap.add_argument("--big-labels", type=int, default=1_000_000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from cleanlab import __version__ as cleanlab_version
    from cleanlab.multiannotator import get_label_quality_multiannotator

    it, an, lab, probs = simulate(args.items, args.annotators, args.density, seed=0)
    cl = CrowdLabels.from_triplets(
        it, an, lab, n_items=args.items, n_annotators=args.annotators, n_classes=K
    )
    dense = np.full((args.items, args.annotators), np.nan)
    dense[it, an] = lab
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = get_label_quality_multiannotator(dense, probs, verbose=False, return_weights=True)
    t_ref = time.perf_counter() - t
    t_ours, ours = crowdmed_time(cl, probs, repeats=3)
    lq = ref["label_quality"]
    stats = ref["annotator_stats"].sort_index()
    detailed = ref["detailed_label_quality"].to_numpy()
    diffs = {
        "consensus_mismatches": int((lq["consensus_label"].to_numpy() != ours.consensus).sum()),
        "consensus_quality": float(
            np.abs(lq["consensus_quality_score"].to_numpy() - ours.consensus_quality).max()
        ),
        "label_quality": float(np.nanmax(np.abs(detailed - ours.label_score_matrix()))),
        "annotator_quality": float(
            np.abs(stats["annotator_quality"].to_numpy() - ours.annotator_quality).max()
        ),
        "worst_class_mismatches": int((stats["worst_class"].to_numpy() != ours.worst_class).sum()),
    }
    print(f"cleanlab {t_ref:.2f} s, crowdmed {t_ours:.3f} s, {diffs}", flush=True)

    # crowdmed alone at scale: many annotators, a few labels per item
    n_big_items = args.big_labels // 5
    n_big_ann = 1000
    bit, ban, blab, bprobs = simulate(n_big_items, n_big_ann, 4 / (n_big_ann - 1), seed=1)
    big = CrowdLabels.from_triplets(
        bit, ban, blab, n_items=n_big_items, n_annotators=n_big_ann, n_classes=K
    )
    tracemalloc.start()
    t = time.perf_counter()
    label_quality(big, bprobs, random_state=0)
    t_big = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    t_big_best, _ = crowdmed_time(big, bprobs, repeats=2)
    t_big = min(t_big, t_big_best)  # the traced run is slower; report the faster untraced one
    print(f"at scale: {big.n_labels} labels, {t_big:.2f} s, peak {peak:.0f} MiB", flush=True)

    n_labels = cl.n_labels
    md = "\n".join(
        [
            "## Label quality (CROWDLAB) against cleanlab",
            "",
            "`benchmarks/label_quality.py`: `crowdmed.quality.label_quality` against cleanlab "
            f"{cleanlab_version} `get_label_quality_multiannotator` (default options: "
            "best-quality consensus, crowdlab quality, self-confidence scores) on the same "
            f"simulated crowd: {args.items:,} items x {args.annotators} annotators, "
            f"{n_labels:,} labels ({n_labels / args.items:.2f} per item, density "
            f"{n_labels / (args.items * args.annotators):.1%} of the dense matrix), K = {K}. "
            f"cleanlab ran once, crowdmed best of 3; one thread. {machine_line()}.",
            "",
            "| | time (s) | speed-up |",
            "|---|---:|---:|",
            f"| cleanlab {cleanlab_version} | {t_ref:.2f} | 1 |",
            f"| crowdmed | {t_ours:.3f} | {t_ref / t_ours:.0f}x |",
            "",
            f"Same results: {diffs['consensus_mismatches']} consensus labels and "
            f"{diffs['worst_class_mismatches']} worst classes differ; largest absolute "
            f"difference {diffs['consensus_quality']:.1e} (consensus quality), "
            f"{diffs['label_quality']:.1e} (label quality), {diffs['annotator_quality']:.1e} "
            "(annotator quality).",
            "",
            f"At scale (crowdmed only): {big.n_labels:,} labels, {n_big_items:,} items, "
            f"{n_big_ann:,} annotators: {t_big:.2f} s, peak traced memory {peak:.0f} MiB "
            "(cleanlab needs the dense float matrix, "
            f"{n_big_items * n_big_ann * 8 / 2**30:.1f} GiB for this crowd, and was not run).",
            "",
        ]
    )
    print(md)
    if not args.no_write:
        raw = {
            "items": args.items, "annotators": args.annotators, "n_labels": n_labels,
            "cleanlab_s": t_ref, "crowdmed_s": t_ours, "speedup": t_ref / t_ours,
            "diffs": diffs, "big": {"n_labels": big.n_labels, "seconds": t_big,
                                    "peak_mib": peak},
        }  # fmt: skip
        write_json(REPO / "benchmarks" / "results" / "label_quality.json", raw)
        update_section("label_quality", md)


if __name__ == "__main__":
    main()
