"""Learning a segmentation network from several raters' masks on DRIVE (Xiao et al. 2021).

Data: the DRIVE test set in ``$CROWDMED_DATA/drive_two_observers`` — 20 RGB fundus images,
each with the vessel masks of two real observers (both observers for all 20 images). Images
and masks are downsampled 2× (2×2 block mean; a mask pixel is vessel when at least half of
its block is) and cropped to 288 × 280 pixels. Fixed split by image: 12 training, 2
validation (early stopping / best epoch, scored against observer 1), 6 test images. Training
uses 64 × 64 patches drawn at random (seeded) inside the field of view of the training images.

Two settings:

* **real** — the two observers are the raters;
* **simulated** — five simulated raters of varied quality drawn from observer 1 with
  :func:`crowdmed.simulate.simulate_mask_raters` (careful, over-segmenting, under-segmenting,
  noisy + shifted, careless with missed/spurious parts and 20 % of its masks absent);
  observer 1 is the truth.

Methods (all the same small MONAI ``UNet``, Adam, same steps; MONAI has no HRNet, the
paper's backbone): (a) one rater, (b) majority-vote and STAPLE consensus, (c) Gaussian
attention focal loss on the majority vote, (d) label re-weighting (cross-entropy), (e)
re-weighting with the GAF loss in both terms, (f) pixel-wise and (g) global annotator
confusion matrices with the trace regulariser (Zhang et al. 2020), and, on the simulated
raters, training on the truth as the ceiling. Metrics on the 6 test images, inside the field
of view: Dice of the vessel and background classes, vessel HD95 (pixels at the working
resolution), and the multi-rater metrics (QUBIQ Dice, ECE, GED², Hungarian-matched IoU against
all raters of the setting); mean ± sd over seeds (seed = network initialisation, patch sample
and data order), and per-seed paired differences with 95 % t intervals.

Usage::

    python benchmarks/segmentation_learning.py [--scale half|paper] [--seeds N] [--steps N]
        [--quick]

``--scale paper`` (full resolution, larger U-Net, 4,000 steps, 5 seeds; writes its own
section ``segmentation_learning_paper``) is the long run at convergence; it also compares the
confusion-matrix methods and training on the truth, with the multi-rater metrics and paired
per-seed differences. ``--rows a`` runs only the single-rater rows (plus the majority-vote
baseline), e.g. to check that a single-rater U-Net reaches the literature's vessel Dice.

``--single-rater`` trains one U-Net per seed on observer 1's masks alone with the command
line, ``crowdmed train segment --method single`` (the library path a user runs: whole images,
no patches, the command's own U-Net), on the 12 training images at the ``--scale``'s
resolution, early stopping on the 2 validation images, and scores its ``--predict`` label maps
on the 6 test images inside the field of view. It writes its own section,
``segmentation_single_rater`` (``--epochs``, ``--batch``, ``--lr``, ``--unet-channels`` and
``--patience`` are passed to the command).

``--trace-sweep 0.001,0.01,...`` trains the two confusion-matrix methods on the simulated raters
with each trace weight (seeds from ``--seed-list``, default 0 and 1) and writes the section
``segmentation_trace_weight``: how the result depends on ``λ``, judged by the validation Dice.

The full run writes the ``segmentation_learning`` section of BENCHMARKS.md and
``benchmarks/results/segmentation_learning.json``; ``--quick`` only prints.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, machine_line, update_section, write_json

DATASET = "drive_two_observers"
TRAIN, VAL, TEST = list(range(12)), [12, 13], list(range(14, 20))

# ``--scale half``: the quick setting of the first benchmark; ``--scale paper``: full DRIVE
# resolution (584 × 565, cropped to 584 × 560, a multiple of the U-Net's stride 8), a wider and
# deeper U-Net, larger patches and many more optimiser steps, 5 seeds: the setting meant to
# train to convergence (a long run: tens of minutes per model on 2 cores).
SCALES: dict[str, dict[str, Any]] = {
    "half": {
        "down": 2,
        "crop": (288, 280),
        "patch": 64,
        "patches_per_image": 20,
        "channels": (8, 16, 32),
        "strides": (2, 2),
        "res_units": 1,
        "steps": 150,
        "seeds": 3,
        "lr": 3e-3,
        "section": "segmentation_learning",
        "json": "benchmarks/results/segmentation_learning.json",
    },
    "paper": {
        "down": 1,
        "crop": (584, 560),
        "patch": 96,
        "patches_per_image": 60,
        "channels": (16, 32, 64, 128),
        "strides": (2, 2, 2),
        "res_units": 2,
        "steps": 4000,
        "seeds": 5,
        "lr": 2e-3,
        "section": "segmentation_learning_paper",
        "json": "benchmarks/results/segmentation_learning_paper.json",
    },
    # The rater experiment trained until the validation Dice levels off, sized for 2 cores:
    # half resolution, 128 × 128 patches (a quarter of the image), a U-Net of the width that
    # reaches the literature's Dice at full resolution, random flips and 90° rotations.
    "converge": {
        "down": 2,
        "crop": (288, 280),
        "patch": 128,
        "patches_per_image": 30,
        "channels": (16, 32, 64),
        "strides": (2, 2),
        "res_units": 1,
        "steps": 1200,
        "batch": 4,
        "seeds": 5,
        "lr": 2e-3,
        "augment": True,
        # the paper's schedule: k + 1 every tenth of the run (every 1,000 of 10,000 steps)
        "k_every": 0.1,
        "section": "segmentation_learning_converge",
        "json": "benchmarks/results/segmentation_learning_converge.json",
    },
}
# The active scale (set by main from --scale).
SCALE: dict[str, Any] = SCALES["half"]
PATCH = SCALE["patch"]
CROP = SCALE["crop"]

# Xiao et al. (2021), Gleason 2019, HRNet18: mean Dice gains (points) over the baseline.
PAPER_GAINS = {"reweight": 0.36, "gaf": 4.07, "reweight-gaf": 7.17}


def data_root() -> Path:
    return Path(os.environ.get("CROWDMED_DATA", REPO.parent / "shared" / "data"))


def _down(a: np.ndarray) -> np.ndarray:
    """2×2 block mean of a (H, W[, C]) array."""
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    a = a[:h, :w].astype(np.float64)
    return a.reshape(h // 2, 2, w // 2, 2, *a.shape[2:]).mean(axis=(1, 3))


def load_drive() -> dict[str, np.ndarray]:
    from PIL import Image

    base = data_root() / DATASET / "DRIVE" / "test"
    if not base.is_dir():
        raise SystemExit(f"DRIVE not found at {base}; set CROWDMED_DATA.")
    imgs, o1, o2, fov, full1, full2 = [], [], [], [], [], []
    ch, cw = CROP
    for i in range(1, 21):
        img = np.asarray(Image.open(base / "images" / f"{i:02d}_test.tif"), dtype=np.float64)
        m1 = np.asarray(Image.open(base / "1st_manual" / f"{i:02d}_manual1.gif")) > 0
        m2 = np.asarray(Image.open(base / "2nd_manual" / f"{i:02d}_manual2.gif")) > 0
        fv = np.asarray(Image.open(base / "mask" / f"{i:02d}_test_mask.gif")) > 0
        full1.append(m1)
        full2.append(m2)
        down = _down if SCALE["down"] == 2 else (lambda a: a.astype(np.float64))
        imgs.append((down(img) / 255.0)[:ch, :cw].transpose(2, 0, 1))
        o1.append((down(m1) >= 0.5)[:ch, :cw])
        o2.append((down(m2) >= 0.5)[:ch, :cw])
        fov.append((down(fv) >= 0.5)[:ch, :cw])
    return {
        "images": np.stack(imgs).astype(np.float32),
        "obs1": np.stack(o1),
        "obs2": np.stack(o2),
        "fov": np.stack(fov),
        "full1": np.stack(full1),
        "full2": np.stack(full2),
    }


def dice_fn():
    """Binary Dice: crowdmed.metrics.segmentation when present, else MONAI's compute_dice."""
    try:
        from crowdmed.metrics.segmentation import dice  # type: ignore[attr-defined]

        def f(a: np.ndarray, b: np.ndarray) -> float:
            return float(dice(np.asarray(a, bool), np.asarray(b, bool)))

        f.source = "crowdmed.metrics.segmentation.dice"  # type: ignore[attr-defined]
        return f
    except ImportError:
        import torch
        from monai.metrics import compute_dice

        def g(a: np.ndarray, b: np.ndarray) -> float:
            pa = torch.as_tensor(np.asarray(a, bool))[None, None].float()
            pb = torch.as_tensor(np.asarray(b, bool))[None, None].float()
            return float(compute_dice(pa, pb, include_background=True, ignore_empty=False))

        g.source = "monai.metrics.compute_dice"  # type: ignore[attr-defined]
        return g


def hd95_fn():
    """Vessel HD95: crowdmed.metrics.segmentation when present, else MONAI's."""
    try:
        from crowdmed.metrics.segmentation import hausdorff_distance

        def f(a: np.ndarray, b: np.ndarray) -> float:
            return float(
                hausdorff_distance(np.asarray(a, bool), np.asarray(b, bool), percentile=95)
            )

        f.source = "crowdmed.metrics.segmentation.hausdorff_distance(percentile=95)"  # type: ignore[attr-defined]
        return f
    except ImportError:
        import torch
        from monai.metrics import compute_hausdorff_distance

        def g(a: np.ndarray, b: np.ndarray) -> float:
            pa = torch.as_tensor(np.asarray(a, bool))[None, None].float()
            pb = torch.as_tensor(np.asarray(b, bool))[None, None].float()
            return float(compute_hausdorff_distance(pa, pb, percentile=95))

        g.source = "monai.metrics.compute_hausdorff_distance(percentile=95)"  # type: ignore[attr-defined]
        return g


def sample_patches(
    images: np.ndarray, masks: np.ndarray, fov: np.ndarray, n_per_image: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random PATCH×PATCH crops centred inside the field of view (seeded)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    half = PATCH // 2
    for i in range(len(images)):
        cy, cx = np.nonzero(fov[i][half:-half, half:-half])
        pick = rng.choice(len(cy), n_per_image, replace=False)
        for p in pick:
            y, x = cy[p], cx[p]
            xs.append(images[i, :, y : y + PATCH, x : x + PATCH])
            ys.append(masks[i, :, y : y + PATCH, x : x + PATCH])
    return np.stack(xs), np.stack(ys)


def make_network(seed: int):
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    return UNet(
        2,
        3,
        2,
        channels=SCALE["channels"],
        strides=SCALE["strides"],
        num_res_units=SCALE["res_units"],
    )


def staple_consensus(masks: np.ndarray) -> np.ndarray:
    """Binary STAPLE per patch-source image: masks (N, A, H, W) bool/int (-1 absent)."""
    from crowdmed.aggregation.segmentation.staple import STAPLE

    out = []
    for case in masks:
        present = [a for a in range(case.shape[0]) if (case[a] >= 0).any()]
        est = STAPLE(max_iter=500).fit(case[present].astype(bool))
        out.append(est.labels_)
    return np.stack(out).astype(np.int64)


def evaluate(pred: np.ndarray, ref: np.ndarray, fov: np.ndarray, dice, hd95) -> dict[str, float]:
    pred = pred.astype(bool) & fov
    ref = ref.astype(bool) & fov
    ves = [dice(p, r) for p, r in zip(pred, ref, strict=True)]
    bg = [dice(~p & f, ~r & f) for p, r, f in zip(pred, ref, fov, strict=True)]
    hd = [hd95(p, r) if p.any() else np.nan for p, r in zip(pred, ref, strict=True)]
    return {
        "dice_vessel": float(np.mean(ves)),
        "dice_bg": float(np.mean(bg)),
        "hd95": float(np.nanmean(hd)),
    }


def multirater_eval(
    proba: np.ndarray, samples: list[np.ndarray], raters: np.ndarray, fov: np.ndarray
) -> dict[str, float]:
    """Multi-rater metrics inside the field of view, averaged over the test images.

    ``proba``: (N, H, W) vessel probability; ``samples``: per image a (S, H, W) bool stack of
    predicted masks (one per rater for the confusion methods, else the one prediction);
    ``raters``: (N, A, H, W) int masks, ``-1`` = absent (left out).
    """
    from crowdmed.metrics import (
        expected_calibration_error,
        generalized_energy_distance,
        hungarian_matched_iou,
        qubiq_dice,
    )

    out: dict[str, list[float]] = {"qubiq_dice": [], "ece": [], "ged": [], "hungarian_iou": []}
    for i in range(len(proba)):
        f = fov[i]
        present = [a for a in range(raters.shape[1]) if (raters[i, a] >= 0).any()]
        r = raters[i, present][:, f] == 1
        p = np.clip(proba[i][f], 0.0, 1.0)
        smp = samples[i][:, f]
        out["qubiq_dice"].append(qubiq_dice(p, r))
        out["ece"].append(expected_calibration_error(p, r))
        out["ged"].append(generalized_energy_distance(smp, r))
        out["hungarian_iou"].append(hungarian_matched_iou(smp, r))
    return {k: float(np.mean(v)) for k, v in out.items()}


def per_rater_predictions(seg, images: np.ndarray, proba: np.ndarray) -> list[np.ndarray]:
    """Each rater's predicted mask from the confusion head: argmax_l Σ_k p_k CM[a, k, l]."""
    out = []
    for i in range(len(images)):
        cm = seg.rater_confusion(images[i : i + 1])[0]  # (A, K, K, H, W)
        p = np.stack([1.0 - proba[i], proba[i]])  # (K, H, W)
        q1 = (p[None, :] * cm[:, :, 1]).sum(1)  # P(rater marks vessel): (A, H, W)
        out.append(q1 > 0.5)
    return out


def run_one(
    method: str,
    rater: int,
    seed: int,
    data: dict[str, Any],
    raters_full: np.ndarray,
    consensus_full: np.ndarray | None,
    steps: int,
    batch: int,
    k_every: float,
    metrics: tuple[Any, Any],
    other_raters: np.ndarray | None = None,
    trace_weight: float = 0.01,
) -> dict[str, Any]:
    """Train and score one model; ``other_raters``: also the multi-rater metrics against them."""
    import torch

    from crowdmed.training import CrowdSegmenter, flip_rotate

    imgs = data["images"]
    stack = (
        raters_full
        if consensus_full is None
        else np.concatenate([raters_full, consensus_full[:, None]], axis=1)
    )
    px, pm = sample_patches(
        imgs[TRAIN], stack[TRAIN], data["fov"][TRAIN], SCALE["patches_per_image"], seed
    )
    masks = pm if consensus_full is None else pm[:, :-1]
    cons = None if consensus_full is None else pm[:, -1]
    n_epochs = max(1, round(steps * batch / len(px)))
    seg = CrowdSegmenter(
        make_network(seed),
        method=method,
        rater=rater,
        epochs=n_epochs,
        batch_size=batch,
        lr=SCALE["lr"],
        k_every=k_every,
        patience=None if n_epochs < 3 else n_epochs,
        augment=flip_rotate if SCALE.get("augment") else None,
        trace_weight=trace_weight,
        random_state=seed,
    )
    t0 = time.perf_counter()
    seg.fit(
        px,
        masks,
        consensus=cons,
        X_val=imgs[VAL],
        y_val=data["obs1"][VAL].astype(np.int64),
        n_classes=2,
    )
    secs = time.perf_counter() - t0
    proba = seg.predict_proba(imgs[TEST])[:, 1]
    pred = proba > 0.5
    dice, hd95 = metrics
    res: dict[str, Any] = {
        "seconds": secs,
        "best_epoch": seg.best_epoch_,
        "epochs": n_epochs,
        "steps": n_epochs * -(-len(px) // batch),
        "final_k": seg.history_[-1]["k"],
        "val_curve": [h.get("val_dice") for h in seg.history_],
    }
    for ref in ("obs1", "obs2"):
        for key, v in evaluate(pred, data[ref][TEST], data["fov"][TEST], dice, hd95).items():
            res[f"{key}_{ref}"] = v
    if seg.weighting_network_ is not None:
        w = seg.rater_weights(imgs[TEST], raters_full[TEST].astype(np.int64))
        fov = data["fov"][TEST][:, None]
        res["mean_weights"] = ((w * fov).sum((0, 2, 3)) / fov.sum()).tolist()
    if getattr(seg, "confusion_network_", None) is not None:
        samples = per_rater_predictions(seg, imgs[TEST], proba)
    else:
        samples = [p[None] for p in pred]
    res.update(multirater_eval(proba, samples, raters_full[TEST], data["fov"][TEST]))
    if other_raters is not None:
        res["multi_other"] = multirater_eval(proba, samples, other_raters[TEST], data["fov"][TEST])
    torch.set_num_threads(1)
    return res


def rater_agreement(data: dict[str, Any], sim: np.ndarray, dice) -> dict[str, Any]:
    d12 = [dice(a, b) for a, b in zip(data["full1"], data["full2"], strict=True)]
    a = sim.shape[1]
    pair = []
    vs_truth = [[] for _ in range(a)]
    for i in range(len(sim)):
        for r in range(a):
            if (sim[i, r] >= 0).any():
                vs_truth[r].append(dice(sim[i, r] == 1, data["obs1"][i]))
        for r, s in itertools.combinations(range(a), 2):
            if (sim[i, r] >= 0).any() and (sim[i, s] >= 0).any():
                pair.append(dice(sim[i, r] == 1, sim[i, s] == 1))
    fov = data["fov"]

    def frac(m: np.ndarray) -> float:
        ok = np.any(m >= 0, axis=(1, 2))  # masks present
        return float(((m == 1) & fov)[ok].sum() / fov[ok].sum())

    return {
        "vessel_fraction": {
            "real": [frac(data["obs1"].astype(np.int64)), frac(data["obs2"].astype(np.int64))],
            "simulated": [frac(sim[:, r].astype(np.int64)) for r in range(a)],
        },
        "drive_obs1_vs_obs2_full_res": (
            float(np.mean(d12)),
            float(np.min(d12)),
            float(np.max(d12)),
        ),
        "drive_obs1_vs_obs2_half_res": float(
            np.mean([dice(a_, b_) for a_, b_ in zip(data["obs1"], data["obs2"], strict=True)])
        ),
        "simulated_pairwise": float(np.mean(pair)),
        "simulated_vs_truth": [float(np.mean(v)) for v in vs_truth],
    }


SIM_NAMES = ["careful", "over-seg (+1 px)", "under-seg (−1 px)", "noisy+shift", "careless"]


def simulated_panel():
    from crowdmed.simulate import MaskRater

    return [
        MaskRater(boundary_noise=0.3),
        MaskRater(bias=1.0, boundary_noise=0.3),
        MaskRater(bias=-1.0, boundary_noise=0.3),
        MaskRater(boundary_noise=1.0, shift=1.0),
        MaskRater(
            boundary_noise=0.5,
            miss_prob=0.5,
            spurious_rate=30.0,
            spurious_radius=2.0,
            absent_prob=0.2,
        ),
    ]


def fmt(vals: list[float], scale: float = 100.0, digits: int = 1) -> str:
    v = np.asarray(vals, dtype=float) * scale
    return f"{np.nanmean(v):.{digits}f} ± {np.nanstd(v, ddof=1) if len(v) > 1 else 0:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="half",
        help="half: 2x downsampled, small U-Net (the quick setting); paper: full resolution, "
        "larger U-Net, many steps, 5 seeds (long)",
    )
    ap.add_argument(
        "--seeds", type=int, default=None, help="default: 3 (half) or 5 (paper, converge)"
    )
    ap.add_argument(
        "--seed-list",
        default=None,
        help="comma-separated seeds to run instead of 0..N-1 (e.g. one seed in its own --part)",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimiser steps per run, rounded to epochs; default: 150 (half) or 4000 (paper)",
    )
    ap.add_argument("--batch", type=int, default=None, help="default: 8 (4 for converge)")
    ap.add_argument(
        "--k-every",
        type=float,
        default=None,
        help="re-weighting schedule: k + 1 every N steps (N >= 1) or every fraction of the run "
        "(< 1); default: 30 steps (half, paper) or 0.1 of the run (converge)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="1 seed, few steps, print only")
    ap.add_argument("--print-only", action="store_true", help="write no files")
    ap.add_argument("--only", default=None, help="comma-separated settings: real,simulated")
    ap.add_argument(
        "--rows",
        default=None,
        help="comma-separated row letters to run, e.g. 'a' (single rater only) or 'b,f,g,t'; "
        "the majority-vote row (b) is always run (the paired baseline)",
    )
    ap.add_argument(
        "--single-rater",
        action="store_true",
        help="train one single-rater U-Net per seed with `crowdmed train segment` (own section)",
    )
    ap.add_argument("--epochs", type=int, default=70, help="--single-rater: epochs")
    ap.add_argument("--lr", type=float, default=2e-3, help="--single-rater: learning rate")
    ap.add_argument("--patience", type=int, default=20, help="--single-rater: patience")
    ap.add_argument("--unet-channels", default="16,32,64", help="--single-rater: U-Net levels")
    ap.add_argument(
        "--add-seeds",
        action="store_true",
        help="--single-rater: run seeds after those in the saved JSON (same settings) and "
        "report all of them",
    )
    ap.add_argument(
        "--singles",
        default=None,
        help="comma-separated rater indices trained alone (default: 0,1 real; 0,3 simulated)",
    )
    ap.add_argument(
        "--no-truth",
        action="store_true",
        help="skip the simulated setting's training on the truth (the same run as training "
        "on observer 1 alone in the real setting; --merge then takes it from there)",
    )
    ap.add_argument(
        "--part",
        default=None,
        help="save this run's results as a part (its own JSON next to the scale's, no "
        "section); run the settings in parallel processes, then --merge",
    )
    ap.add_argument(
        "--merge",
        default=None,
        help="comma-separated parts to merge into the scale's JSON and section",
    )
    ap.add_argument(
        "--trace-sweep",
        default=None,
        help="comma-separated trace weights: train the confusion methods on the simulated "
        "raters with each (seeds from --seed-list, default 0,1) and write their own section",
    )
    ap.add_argument(
        "--rerender",
        action="store_true",
        help="re-write the BENCHMARKS.md section from the saved JSON (no training)",
    )
    args = ap.parse_args()
    if args.trace_sweep is not None:
        try:
            weights = [float(x) for x in args.trace_sweep.split(",")]
        except ValueError:
            weights = []
        if not weights or not all(math.isfinite(w) and w >= 0 for w in weights):
            ap.error(
                f"--trace-sweep must be comma-separated non-negative numbers, e.g. "
                f"0.001,0.01,0.1; got {args.trace_sweep!r}"
            )
    global SCALE, PATCH, CROP
    SCALE = SCALES[args.scale]
    if args.quick:  # a smoke test of the pipeline: few patches, one short epoch
        SCALE = {**SCALE, "patches_per_image": 4}
    PATCH, CROP = SCALE["patch"], SCALE["crop"]
    if args.single_rater:
        if args.rerender:
            import json

            raw = json.loads((REPO / SINGLE["json"]).read_text())
            md = render_single(raw)
            print(md)
            update_section(SINGLE["section"], md)
        else:
            single_rater(args)
        return
    if args.batch is None:
        args.batch = SCALE.get("batch", 8)
    if args.k_every is None:
        args.k_every = SCALE.get("k_every", 30)
    elif args.k_every >= 1:
        args.k_every = int(args.k_every)
    if args.merge:
        merge_parts(args.merge.split(","))
        return
    if args.trace_sweep:
        trace_sweep(args)
        return
    if args.rerender and args.scale == "converge" and (REPO / SWEEP["json"]).exists():
        import json

        md = render_sweep(json.loads((REPO / SWEEP["json"]).read_text()))
        update_section(SWEEP["section"], md)
    if args.rerender:
        rerender()
        return

    import torch

    torch.set_num_threads(args.threads)
    from crowdmed.simulate import simulate_mask_raters

    n_seeds = args.seeds if args.seeds is not None else SCALE["seeds"]
    seeds = [0] if args.quick else list(range(n_seeds))
    if args.seed_list:
        seeds = [int(x) for x in args.seed_list.split(",")]
    steps = 10 if args.quick else (args.steps if args.steps is not None else SCALE["steps"])
    t_start = time.perf_counter()
    data = load_drive()
    dice, hd95 = dice_fn(), hd95_fn()
    sim = simulate_mask_raters(data["obs1"], simulated_panel(), random_state=2021)
    real = np.stack([data["obs1"], data["obs2"]], axis=1).astype(np.int64)
    agreement = rater_agreement(data, sim, dice)
    print("agreement", agreement, flush=True)

    settings: dict[str, dict[str, Any]] = {
        "real": {"raters": real, "names": ["observer 1", "observer 2"]},
        "simulated": {"raters": sim, "names": SIM_NAMES},
    }
    if args.only:
        settings = {k: v for k, v in settings.items() if k in args.only.split(",")}
    results: dict[str, Any] = {}
    plans: dict[str, list[tuple[str, str, int, np.ndarray | None]]] = {}
    from crowdmed.training.segmenter import _vote

    for name, s in settings.items():
        raters = s["raters"]
        staple = staple_consensus(raters)
        rows: list[tuple[str, str, int, np.ndarray | None]] = []
        singles = [0, 1] if name == "real" else [0, 3]
        if args.singles is not None:
            singles = [int(x) for x in args.singles.split(",") if x.strip()]
        for r in singles:
            rows.append((f"(a) single: {s['names'][r]}", "single", r, None))
        rows += [
            ("(b) consensus: majority vote", "consensus", 0, None),
            ("(b) consensus: STAPLE", "consensus", 0, staple),
            ("(c) GAF loss (on MV)", "gaf", 0, None),
            ("(d) re-weighting (CE)", "reweight", 0, None),
            ("(e) re-weighting + GAF", "reweight-gaf", 0, None),
            ("(f) confusion matrices, pixel-wise", "confusion-pixel", 0, None),
            ("(g) confusion matrices, global", "confusion-global", 0, None),
        ]
        if name == "simulated" and not args.no_truth:  # the ceiling: training on the truth
            rows.append(("(t) truth (observer 1)", "consensus", 0, data["obs1"].astype(np.int64)))
        if args.rows:
            keep = {f"({x.strip()})" for x in args.rows.split(",")}
            base = "(b) consensus: majority vote"
            rows = [row for row in rows if row[0] == base or row[0].split(" ")[0] in keep]
        plans[name] = rows
        results[name] = {}
        if np.array_equal(staple, _vote(raters, 2)):
            # the same training target as the majority vote: the same runs (filled in below)
            results[name]["(b) consensus: STAPLE"] = {"same_as": "(b) consensus: majority vote"}
            print(f"{name}: STAPLE = majority vote, runs reused", flush=True)

    def snapshot(seeds_done: list[int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, rows in results.items():
            out[name] = {}
            for label in [row[0] for row in plans[name] if row[0] in rows]:
                r = rows[label]
                if "same_as" in r:
                    r = {**rows[r["same_as"]], "same_as": r["same_as"]}
                out[name][label] = r
        return {
            "config": {
                "seeds": seeds_done,
                "steps": steps,
                "batch": args.batch,
                "k_every": args.k_every,
                "scale": args.scale,
                "down": SCALE["down"],
                "patch": PATCH,
                "patches_per_image": SCALE["patches_per_image"],
                "crop": CROP,
                "split": {"train": TRAIN, "val": VAL, "test": TEST},
                "network": (
                    f"monai UNet(2, 3, 2, channels={SCALE['channels']}, "
                    f"strides={SCALE['strides']}, num_res_units={SCALE['res_units']})"
                ),
                "lr": SCALE["lr"],
                "augment": "crowdmed.training.flip_rotate" if SCALE.get("augment") else None,
                "dice": dice.source,
                "hd95": hd95.source,
            },
            "agreement": agreement,
            "results": out,
            "seconds_total": time.perf_counter() - t_start,
            "machine": machine_line(),
        }

    # seeds outermost: a run stopped early still has every method on the seeds it finished
    for i, seed in enumerate(seeds):
        for name, rows in plans.items():
            for label, method, r, cons in rows:
                if "same_as" in results[name].get(label, {}):
                    continue
                res = run_one(
                    method,
                    r,
                    seed,
                    data,
                    settings[name]["raters"],
                    cons,
                    steps,
                    args.batch,
                    args.k_every,
                    (dice, hd95),
                    # training on observer 1 alone is the simulated setting's truth row
                    sim if (name, method, r) == ("real", "single", 0) else None,
                )
                entry = results[name].setdefault(label, {"method": method, "rater": r, "runs": []})
                entry["runs"].append(res)
                print(
                    f"{name:9s} {label:34s} seed {seed}: vessel Dice obs1 "
                    f"{res['dice_vessel_obs1']:.3f} obs2 {res['dice_vessel_obs2']:.3f} "
                    f"({res['seconds']:.0f} s, {time.perf_counter() - t_start:.0f} s total)",
                    flush=True,
                )
        if args.part and not (args.quick or args.print_only):
            write_json(part_json(args.part), snapshot(seeds[: i + 1]))
    raw = snapshot(seeds)
    if args.part:
        return
    md = render(raw)
    print(md)
    if not (args.quick or args.print_only):
        update_section(SCALE["section"], md)
        write_json(SCALE["json"], raw)


SWEEP = {
    "section": "segmentation_trace_weight",
    "json": "benchmarks/results/segmentation_trace_weight.json",
}


def trace_sweep(args: argparse.Namespace) -> None:
    """``--trace-sweep``: the confusion methods on the simulated raters at several ``λ``."""
    import torch

    from crowdmed.simulate import simulate_mask_raters

    torch.set_num_threads(args.threads)
    weights = [float(x) for x in args.trace_sweep.split(",")]
    seeds = [int(x) for x in (args.seed_list or "0,1").split(",")]
    steps = args.steps if args.steps is not None else SCALE["steps"]
    if args.quick:
        steps, seeds = 10, seeds[:1]
    t_start = time.perf_counter()
    data = load_drive()
    metrics = dice_fn(), hd95_fn()
    sim = simulate_mask_raters(data["obs1"], simulated_panel(), random_state=2021)
    runs = []
    for seed in seeds:
        for tw in weights:
            for method in ("confusion-pixel", "confusion-global"):
                res = run_one(
                    method, 0, seed, data, sim, None, steps, args.batch, args.k_every, metrics,
                    trace_weight=tw,
                )  # fmt: skip
                runs.append({"seed": seed, "trace_weight": tw, "method": method, **res})
                print(
                    f"λ {tw:g} {method:16s} seed {seed}: best val Dice "
                    f"{max(v for v in res['val_curve'] if v is not None):.3f}, test vessel "
                    f"Dice {res['dice_vessel_obs1']:.3f} ({res['seconds']:.0f} s)",
                    flush=True,
                )
    raw = {
        "config": {
            "scale": args.scale,
            "seeds": seeds,
            "trace_weights": weights,
            "steps": steps,
            "batch": args.batch,
            "threads": args.threads,
        },
        "runs": runs,
        "seconds_total": time.perf_counter() - t_start,
        "machine": machine_line(),
    }
    md = render_sweep(raw)
    print(md)
    if not (args.quick or args.print_only):
        update_section(SWEEP["section"], md)
        write_json(SWEEP["json"], raw)


def vote_reference(seeds: list[int]) -> float | None:
    """Mean test vessel Dice of the converge run's simulated majority-vote row on ``seeds``."""
    import json

    path = REPO / SCALES["converge"]["json"]
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    runs = raw["results"].get("simulated", {}).get("(b) consensus: majority vote", {})
    order = raw["config"]["seeds"]  # runs are stored in this seed order
    pairs = zip(order, runs.get("runs", []), strict=True)
    vals = [r["dice_vessel_obs1"] for s, r in pairs if s in seeds]
    return float(np.mean(vals)) if len(vals) == len(seeds) else None


def render_sweep(raw: dict[str, Any]) -> str:
    cfg = raw["config"]
    names = {"confusion-pixel": "pixel-wise", "confusion-global": "global"}
    seeds = ", ".join(str(x) for x in cfg["seeds"])
    lines = [
        "## DRIVE confusion matrices: the trace weight λ (`segmentation_learning --trace-sweep`)",
        "",
        f"`python benchmarks/segmentation_learning.py --scale {cfg['scale']} --trace-sweep "
        + ",".join(f"{w:g}" for w in cfg["trace_weights"])
        + f" --seed-list {','.join(str(x) for x in cfg['seeds'])} --threads {cfg['threads']}`"
        f" ({raw['seconds_total'] / 60:.1f} min). {raw['machine']}.",
        "",
        "The confusion-matrix methods of the section above (same scale, patches, U-Net, steps "
        f"and schedule; the five simulated raters; seeds {seeds}) trained with each trace "
        "weight λ (`CrowdSegmenter(trace_weight=λ)`, `crowdmed train segment --trace-weight`; "
        "the section above uses crowdmed's default, 0.01). *Best val Dice*: the highest vessel "
        "Dice on the 2 validation images (observer 1) over the epochs, the criterion a user "
        "can choose λ by; test columns as above (the kept epoch's network, 6 test images, "
        "inside the field of view). Mean over the seeds, each seed's value in brackets.",
        "",
        "| head | λ | best val Dice | test vessel Dice | test background Dice |",
        "|---|---:|---:|---:|---:|",
    ]

    def cell(vals: list[float]) -> str:
        return f"{np.mean(vals):.3f} ({' / '.join(f'{v:.3f}' for v in vals)})"

    best: dict[str, tuple[float, float]] = {}
    degenerate: list[str] = []
    for method in ("confusion-pixel", "confusion-global"):
        for tw in cfg["trace_weights"]:
            rs = [r for r in raw["runs"] if r["method"] == method and r["trace_weight"] == tw]
            if not rs:
                continue
            val = [max(v for v in r["val_curve"] if v is not None) for r in rs]
            lines.append(
                f"| {names[method]} | {tw:g} | {cell(val)} | "
                f"{cell([r['dice_vessel_obs1'] for r in rs])} | "
                f"{cell([r['dice_bg_obs1'] for r in rs])} |"
            )
            if method not in best or np.mean(val) > best[method][1]:
                best[method] = (tw, float(np.mean(val)))
            if np.mean([r["dice_bg_obs1"] for r in rs]) < 0.5:
                degenerate.append(f"the {names[method]} head at λ = {tw:g}")
    n = len(cfg["seeds"])
    ref = vote_reference(cfg["seeds"])
    lines += [
        "",
        (
            f"For reference, training on the majority vote of the same raters gave a test "
            f"vessel Dice of {ref:.3f} on these seeds (section above). "
            if ref is not None
            else ""
        )
        + "By the validation Dice the best λ is "
        + "; ".join(f"{w:g} for the {names[m]} head" for m, (w, _) in best.items())
        + f" ({n} seed{'s' if n > 1 else ''}: a guide, not a test)."
        + (
            " Degenerate: "
            + ", ".join(degenerate)
            + " (background Dice below 0.5): the segmentation marks vessel almost everywhere "
            "and the confusion matrices explain the raters' masks from it, the solution a "
            "large trace weight allows."
            if degenerate
            else ""
        ),
        "",
    ]
    return "\n".join(lines)


def part_json(part: str) -> str:
    return SCALE["json"].replace(".json", f".{part}.json")


def merge_parts(parts: list[str]) -> None:
    """Merge the results of parts run in parallel processes into the scale's JSON and section."""
    import json

    raws = [json.loads((REPO / part_json(p)).read_text()) for p in parts]
    raw = dict(raws[0])
    # parts may split a setting by seeds: their runs are joined in seed order
    raw["results"] = {}
    seeds_of: dict[str, list[int]] = {}
    for r in raws:
        for name, rows in r["results"].items():
            seeds_of.setdefault(name, []).extend(r["config"]["seeds"])
            into = raw["results"].setdefault(name, {})
            for label, row in rows.items():
                if label in into:
                    into[label] = {**into[label], "runs": into[label]["runs"] + row["runs"]}
                else:
                    into[label] = row
    for name, got in seeds_of.items():
        if sorted(got) != sorted(set(got)):
            raise ValueError(f"parts repeat a seed of the {name} setting: {sorted(got)}")
    raw["config"] = {**raw["config"], "seeds": sorted(set(next(iter(seeds_of.values()))))}
    real, sim = raw["results"].get("real", {}), raw["results"].get("simulated")
    t_label, a_label = "(t) truth (observer 1)", "(a) single: observer 1"
    if sim is not None and t_label not in sim and a_label in real:
        # the same training (patches, initialisation, order, target) as the simulated
        # setting's truth row: its runs, with the multi-rater metrics against the 5 raters
        runs = [{**x, **x["multi_other"]} for x in real[a_label]["runs"]]
        sim[t_label] = {"method": "consensus", "rater": 0, "runs": runs, "same_as": a_label}
    raw["parts"] = {
        p: {
            "seconds": r["seconds_total"],
            "settings": list(r["results"]),
            "seeds": r["config"]["seeds"],
        }
        for p, r in zip(parts, raws, strict=True)
    }
    raw["seconds_total"] = max(r["seconds_total"] for r in raws)
    raw["cpu_seconds"] = sum(
        x["seconds"]
        for rows in raw["results"].values()
        for r in rows.values()
        if not r.get("same_as")
        for x in r["runs"]
    )
    raw["figure"] = plot_curves(raw["results"], SCALE["json"].replace(".json", "_curves.png"))
    write_json(SCALE["json"], raw)
    md = render(raw)
    print(md)
    update_section(SCALE["section"], md)


SINGLE = {
    "section": "segmentation_single_rater",
    "json": "benchmarks/results/segmentation_single_rater.json",
}


def write_cli_cases(data: dict[str, Any], root: Path) -> dict[str, Path]:
    """DRIVE in the layout of ``crowdmed train segment``: PNG images, observer 1's masks."""
    from PIL import Image

    dirs = {k: root / k for k in ("images", "masks", "val_images", "val_masks", "test_images")}
    (dirs["masks"] / "observer1").mkdir(parents=True)
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    rgb = np.rint(data["images"].transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    mask = data["obs1"].astype(np.uint8) * 255
    for i in range(len(rgb)):
        case = f"{i + 1:02d}_test.png"
        if i in TRAIN:
            Image.fromarray(rgb[i]).save(dirs["images"] / case)
            Image.fromarray(mask[i]).save(dirs["masks"] / "observer1" / case)
        elif i in VAL:
            Image.fromarray(rgb[i]).save(dirs["val_images"] / case)
            Image.fromarray(mask[i]).save(dirs["val_masks"] / case)
        else:
            Image.fromarray(rgb[i]).save(dirs["test_images"] / case)
    return dirs


def single_rater_run(
    args: argparse.Namespace, data: dict[str, Any], seed: int, root: Path, metrics: Any
) -> dict[str, Any]:
    """One ``crowdmed train segment --method single`` run; its test-set scores."""
    import json
    import subprocess

    import pandas as pd
    from PIL import Image

    dirs = write_cli_cases(data, root / f"cases{seed}")
    out = root / f"model{seed}"
    cli = [sys.executable, "-m", "crowdmed"]
    cmd = [
        "train", "segment", "--images", dirs["images"], "--masks", dirs["masks"],
        "--method", "single", "--rater", "observer1", "--val-images", dirs["val_images"],
        "--val-masks", dirs["val_masks"], "--unet-channels", args.unet_channels,
        "--epochs", args.epochs, "--batch-size", args.batch, "--lr", args.lr,
        "--patience", args.patience, "--seed", seed, "--out", out,
        "--predict", dirs["test_images"],
    ]  # fmt: skip
    cmd = [str(c) for c in cmd]
    import resource

    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cli + cmd, check=True)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    pred = np.stack(
        [np.asarray(Image.open(out / "predictions" / f"{i + 1:02d}_test.png")) > 0 for i in TEST]
    )
    dice, hd95 = metrics
    run = json.loads((out / "run.json").read_text())
    history = pd.read_csv(out / "history.csv")
    res: dict[str, Any] = {
        "seed": seed,
        "command": "crowdmed " + " ".join(c if "/" not in c else Path(c).name for c in cmd),
        "wall_s": wall,
        "cpu_s": cpu,
        "fit_s": float(history["seconds"].sum()),
        "epochs_run": len(history),
        "best_epoch": int(history["val_dice"].idxmax()) + 1,
        "steps": len(history) * -(-len(TRAIN) // args.batch),
        "best_val_dice": float(history["val_dice"].max()),
        "run_json_fit": run.get("fit"),
    }
    for ref in ("obs1", "obs2"):
        for key, v in evaluate(pred, data[ref][TEST], data["fov"][TEST], dice, hd95).items():
            res[f"{key}_{ref}"] = v
    return res


def single_rater(args: argparse.Namespace) -> None:
    """``--single-rater``: one U-Net per seed trained by ``crowdmed train segment``."""
    import tempfile

    n_seeds = args.seeds if args.seeds is not None else 1
    if args.quick:
        args.epochs, n_seeds = 1, 1
    saved: dict[str, Any] | None = None
    if args.add_seeds:
        import json

        saved = json.loads((REPO / SINGLE["json"]).read_text())
    data = load_drive()
    metrics = dice_fn(), hd95_fn()
    config = {
        "scale": args.scale,
        "image_size": list(data["images"].shape[2:]),
        "down": SCALE["down"],
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "patience": args.patience,
        "unet_channels": args.unet_channels,
        "split": {"train": TRAIN, "val": VAL, "test": TEST},
        "dice": metrics[0].source,
    }
    if saved is not None and saved["config"] != config:
        raise SystemExit(
            f"--add-seeds: the saved runs used other settings {saved['config']}; rerun "
            "with them or without --add-seeds."
        )
    load0 = os.getloadavg()
    runs = []
    t_start = time.perf_counter()
    first = 0 if saved is None else 1 + max(r["seed"] for r in saved["runs"])
    with tempfile.TemporaryDirectory(prefix="drive-single-") as tmp:
        for seed in range(first, first + n_seeds):
            res = single_rater_run(args, data, seed, Path(tmp), metrics)
            res["load_after"] = os.getloadavg()
            runs.append(res)
            print(
                f"seed {seed}: vessel Dice (FOV) obs1 {res['dice_vessel_obs1']:.3f} obs2 "
                f"{res['dice_vessel_obs2']:.3f}, {res['wall_s'] / 60:.1f} min, "
                f"{res['steps']} steps",
                flush=True,
            )
    human = evaluate(data["obs2"][TEST], data["obs1"][TEST], data["fov"][TEST], *metrics)
    raw = {
        "observer2_vs_observer1": human,
        "config": config,
        "runs": runs,
        "load_before": load0,
        "seconds_total": time.perf_counter() - t_start,
        "machine": machine_line(),
        "cpus": os.cpu_count(),
    }
    if saved is not None:
        raw["commands"] = saved.get("commands") or [command(saved["config"], len(saved["runs"]))]
        raw["commands"].append(command(raw["config"], n_seeds, add=True))
        raw["runs"] = saved["runs"] + runs
        raw["load_before"] = saved["load_before"]
        raw["seconds_total"] += saved["seconds_total"]
    md = render_single(raw)
    print(md)
    if not (args.quick or args.print_only):
        update_section(SINGLE["section"], md)
        write_json(SINGLE["json"], raw)


def command(cfg: dict[str, Any], seeds: int, add: bool = False) -> str:
    """The benchmark's command line for ``seeds`` single-rater runs with ``cfg``."""
    return (
        f"python benchmarks/segmentation_learning.py --single-rater --scale {cfg['scale']} "
        f"--seeds {seeds} --epochs {cfg['epochs']} --batch {cfg['batch']} --lr {cfg['lr']:g}"
        f" --patience {cfg['patience']} --unet-channels {cfg['unet_channels']}"
        + (" --add-seeds" if add else "")
    )


def render_single(raw: dict[str, Any]) -> str:
    cfg, runs = raw["config"], raw["runs"]
    h, w = cfg["image_size"]
    goal, budget = 0.78, 15.0
    # the command's own two threads give a load of about 2; more means other jobs ran too
    shared = raw["load_before"][0] > 1.0 or any(r["load_after"][0] > 3.0 for r in runs)
    d1 = [r["dice_vessel_obs1"] for r in runs]
    mins = [r["wall_s"] / 60 for r in runs]
    lines = [
        "## DRIVE: one single-rater U-Net trained by `crowdmed train segment` "
        "(`segmentation_learning --single-rater`)",
        "",
        " then ".join(f"`{c}`" for c in raw.get("commands", [command(cfg, len(runs))]))
        + f" ({raw['seconds_total'] / 60:.1f} min in total). {raw['machine']}. The command ran "
        f"with torch's default threads on the machine's {raw['cpus']} cores"
        + (", shared with other jobs" if shared else ", with no other job running")
        + f": load average {raw['load_before'][0]:.1f} before the first model and "
        + ", ".join(f"{r['load_after'][0]:.1f}" for r in runs)
        + " (1-minute) after each model.",
        "",
        "Each seed runs the command (here seed 0; each seed its own `--seed` and `--out`) "
        f"`{runs[0]['command']}` (folders written by the script: the 12 "
        "training images as PNG with observer 1's masks as the one rater, the 2 validation "
        "images with observer 1's masks, the 6 test images to `--predict`). Images at "
        f"{h} × {w} pixels ({scale_text({'crop': (h, w), 'down': cfg['down']})}; DRIVE is "
        "584 × 565), whole images, no patches and no augmentation; the command keeps the "
        "epoch of the best validation Dice. Vessel Dice of the predicted label maps on the 6 "
        "test images inside the field of view, averaged over images. Goal: "
        f"≥ {goal:.2f} (literature ≈ 0.80) in ≤ {budget:.0f} minutes per model on 2 cores.",
        "",
        "| seed | vessel Dice vs obs 1 (FOV) | vs obs 2 | background Dice | vessel HD95 (px) | "
        "wall time (min) | CPU time (min) | epochs run / best | optimiser steps | "
        "best val Dice |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['seed']} | {r['dice_vessel_obs1']:.3f} | {r['dice_vessel_obs2']:.3f} | "
            f"{r['dice_bg_obs1']:.3f} | {r['hd95_obs1']:.1f} | {r['wall_s'] / 60:.1f} | "
            f"{r['cpu_s'] / 60:.1f} | "
            f"{r['epochs_run']} / {r['best_epoch']} | {r['steps']} | {r['best_val_dice']:.3f} |"
        )
    reached = min(d1) >= goal
    fast = max(mins) <= budget
    lines += [
        "",
        (
            f"Vessel Dice {fmt(d1, 1.0, 3)} over {len(runs)} seeds"
            if len(runs) > 1
            else f"Vessel Dice {d1[0]:.3f} (one seed)"
        )
        + f": the goal of {goal:.2f} "
        + ("is reached" if reached else f"is not reached (short by {goal - min(d1):.3f})")
        + (" by every seed" if reached and len(runs) > 1 else "")
        + f"; {max(mins):.1f} minutes for the slowest model "
        + ("(within" if fast else "(over")
        + f" the {budget:.0f}-minute budget"
        + (", on a shared machine)" if shared else ")")
        + ". The human reference on the "
        "same 6 test images and the same resolution: observer 2 scores "
        f"{raw['observer2_vs_observer1']['dice_vessel']:.3f} against observer 1 inside the field "
        "of view. *CPU time*: user + system time of the command (both threads); on an idle "
        "2-core machine the wall time would be at least half of it.",
        "",
    ]
    return "\n".join(lines)


def rerender() -> None:
    """Re-write the section from the saved results; adds data-derived fields if missing."""
    import json

    raw = json.loads((REPO / SCALE["json"]).read_text())
    if "vessel_fraction" not in raw["agreement"]:
        from crowdmed.simulate import simulate_mask_raters

        data = load_drive()
        sim = simulate_mask_raters(data["obs1"], simulated_panel(), random_state=2021)
        raw["agreement"] = rater_agreement(data, sim, dice_fn())
        write_json(SCALE["json"], raw)
    md = render(raw)
    print(md)
    update_section(SCALE["section"], md)


def weights_finding(results: dict[str, Any], agreement: dict[str, Any]) -> list[str]:
    """Where the jointly trained weighting network put the weight (from the saved runs)."""
    names = {"real": ["observer 1", "observer 2"], "simulated": SIM_NAMES}
    out = [
        "**Where the weighting network puts the weight.** Trained jointly with the segmentation "
        "network on the same loss (the paper's description), the softmax weights minimise "
        "`mean_n(l_n ⊙ w_n)` by moving onto the rater with the smallest per-pixel loss. The "
        "mean test-image weights (tables above) show where they went:"
    ]
    fr = agreement.get("vessel_fraction", {})
    smallest: list[bool] = []
    for name, rows in results.items():
        for label, r in rows.items():
            runs = r["runs"]
            if "mean_weights" not in runs[0]:
                continue
            w = np.mean([x["mean_weights"] for x in runs], axis=0)
            top = int(np.argmax(w))
            extra = ""
            if name in fr:
                f = fr[name]
                smallest.append(top == int(np.argmin(f)))
                order = "the smallest" if smallest[-1] else "not the smallest"
                extra = (
                    f"; its masks cover {100 * f[top]:.1f} % of the field of view, {order} "
                    "vessel fraction of the raters ("
                    + ", ".join(f"{100 * v:.1f} %" for v in f)
                    + ")"
                )
            if name == "simulated":
                extra += f"; its Dice with the truth is {agreement['simulated_vs_truth'][top]:.3f}"
            out.append(
                f"- {name}, {label[4:]}: {w[top]:.2f} of the weight on {names[name][top]}{extra}."
            )
    if smallest and all(smallest):
        out.append("")
        out.append(
            "With thin, sparse foreground the lowest-loss rater at the uncertain vessel borders is "
            "the one who marks the fewest vessel pixels, so the weighting picks the most "
            "conservative rater, not the most accurate one; the vote term (λ1 ≥ 1/2) is what "
            "keeps the segmentation usable."
        )
    return out


def verdict(results: dict[str, Any], labels: dict[str, str], base: str) -> list[str]:
    """One sentence per setting, derived from the per-seed gains (no hand-written numbers)."""
    out = []
    for name in results:
        from crowdmed.metrics.stats import paired_difference

        b = [x["dice_vessel_obs1"] for x in results[name][base]["runs"]]
        parts = []
        for label in labels.values():
            if label not in results[name]:
                continue
            m = [x["dice_vessel_obs1"] for x in results[name][label]["runs"]]
            d = paired_difference(m, b)
            word = {"better": "better", "worse": "worse"}.get(d.verdict, "no difference detected")
            ci = "" if d.n < 2 else f", 95 % CI {100 * d.low:+.1f} to {100 * d.high:+.1f}"
            parts.append(f"{label[4:]}: {word} ({100 * d.mean:+.1f} points{ci})")
        if parts:
            out.append(f"- **{name}**: " + "; ".join(parts) + ".")
    return [
        "**Does the paper's effect reproduce here?** Read against the paper's gains above "
        "(all positive, GAF largest, both together largest of all):",
        *out,
    ]


CONFUSION_ROWS = ("(f) confusion matrices, pixel-wise", "(g) confusion matrices, global")


def confusion_goal(results: dict[str, Any]) -> list[str]:
    """The issue's goal on the simulated raters: ≥ 3 points over MV, within 2 of the truth."""
    from crowdmed.metrics.stats import format_difference, paired_difference

    sim = results.get("simulated", {})
    base, truth = "(b) consensus: majority vote", "(t) truth (observer 1)"
    if base not in sim or truth not in sim:
        return []
    b = [x["dice_vessel_obs1"] for x in sim[base]["runs"]]
    t = [x["dice_vessel_obs1"] for x in sim[truth]["runs"]]
    out = [
        "**Goal on the simulated raters** (a confusion-matrix method beats the majority vote by "
        "≥ 3 Dice points and comes within 2 points of training on the truth; mean per-seed "
        "difference, 95 % t interval):"
    ]
    for label in CONFUSION_ROWS:
        if label not in sim:
            continue
        m = [x["dice_vessel_obs1"] for x in sim[label]["runs"]]
        vs_mv, vs_t = paired_difference(m, b), paired_difference(m, t)
        met = 100 * vs_mv.mean >= 3 and 100 * vs_t.mean >= -2
        out.append(
            f"- {label[4:]}: vs majority vote "
            f"{format_difference(vs_mv, digits=1, scale=100)}; vs the truth "
            f"{format_difference(vs_t, digits=1, scale=100)}: goal "
            + ("**met** (on the means)" if met else "**not met**")
            + "."
        )
    return out


def convergence_lines(results: dict[str, Any], figure: str | None) -> list[str]:
    """Where the validation Dice peaked, per method: is the run long enough?"""
    lines = [
        "**Convergence.** Validation vessel Dice (2 images, observer 1) per epoch; the table "
        "gives the epoch whose weights were kept (mean over seeds) and the mean validation Dice "
        "of the last three epochs against the best."
        + (f" Curves: [{Path(figure).name}]({figure})." if figure else ""),
        "",
        "| setting | method | kept epoch (of N) | best val Dice | mean of last 3 epochs |",
        "|---|---|---:|---:|---:|",
    ]
    for name, rows in results.items():
        for label, r in rows.items():
            runs = [x for x in r["runs"] if x.get("val_curve")]
            if not runs or r.get("same_as"):
                continue
            best = [max(v for v in x["val_curve"] if v is not None) for x in runs]
            last = [float(np.mean(x["val_curve"][-3:])) for x in runs]
            kept = np.mean([x["best_epoch"] for x in runs])
            lines.append(
                f"| {name} | {label} | {kept:.1f} (of {runs[0]['epochs']}) | "
                f"{np.mean(best):.3f} | {np.mean(last):.3f} |"
            )
    return lines


def plot_curves(results: dict[str, Any], path: str) -> str:
    """Validation Dice per epoch, mean over seeds, one panel per setting (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items(), strict=True):
        for label, r in rows.items():
            curves = [x["val_curve"] for x in r["runs"] if x.get("val_curve")]
            if not curves or r.get("same_as"):
                continue
            n = min(len(c) for c in curves)
            mean = np.mean([[np.nan if v is None else v for v in c[:n]] for c in curves], 0)
            ax.plot(np.arange(1, n + 1), mean, label=label, lw=1.4)
        ax.set_title(f"DRIVE, {name} raters")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation vessel Dice (obs 1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = REPO / path
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return path


def parts_text(raw: dict[str, Any]) -> str:
    if "parts" not in raw:
        return ""
    each = "; ".join(
        f"{'/'.join(v['settings'])} seeds {','.join(map(str, v['seeds']))}: "
        f"{v['seconds'] / 60:.1f} min"
        for v in raw["parts"].values()
    )
    return (
        f" (parts run in parallel processes, 1 torch thread each, on the 2 cores: {each}; "
        f"{raw['cpu_seconds'] / 60:.0f} min of training in all)"
    )


def k_text(k_every: float) -> str:
    return f"{k_every:g} of the run" if k_every < 1 else f"{int(k_every)} steps"


def aug_text(cfg: dict[str, Any]) -> str:
    if not cfg.get("augment"):
        return ""
    return f"; training batches randomly flipped and rotated by 90° (`{cfg['augment']}`)"


def scale_text(cfg: dict[str, Any]) -> str:
    ch, cw = cfg["crop"]
    if cfg.get("down", 2) == 2:
        return f"images 2× downsampled and cropped to {ch} × {cw}"
    return f"full resolution, cropped to {ch} × {cw}"


MULTI = [("qubiq_dice", "QUBIQ Dice", 100.0), ("ece", "ECE", 100.0), ("ged", "GED²", 1.0)]
MULTI += [("hungarian_iou", "Hungarian IoU", 100.0)]


def multi_cells(runs: list[dict[str, Any]]) -> str:
    if "qubiq_dice" not in runs[0]:
        return ""
    return " | " + " | ".join(
        fmt([x[k] for x in runs], scale, 1 if scale > 1 else 3) for k, _n, scale in MULTI
    )


def paired_table(results: dict[str, Any]) -> list[str]:
    """Per-seed paired differences in vessel Dice (points) with 95 % t intervals."""
    from crowdmed.metrics.stats import format_difference, paired_difference

    base = "(b) consensus: majority vote"
    lines = [
        "### Paired per-seed differences in vessel Dice (points, vs observer 1)",
        "",
        "Mean of the per-seed differences with its 95 % t interval; a method is called better or "
        "worse only when the interval excludes 0.",
        "",
    ]
    has_truth = any("(t) truth (observer 1)" in rows for rows in results.values())
    lines += (
        ["| setting | method | vs majority vote | vs training on the truth |", "|---|---|---|---|"]
        if has_truth
        else ["| setting | method | vs majority vote |", "|---|---|---|"]
    )
    for name, rows in results.items():
        b = [x["dice_vessel_obs1"] for x in rows[base]["runs"]]
        truth = rows.get("(t) truth (observer 1)")
        for label, r in rows.items():
            m = [x["dice_vessel_obs1"] for x in r["runs"]]
            vs_mv = "–"
            if label != base:
                vs_mv = format_difference(paired_difference(m, b), digits=1, scale=100)
            vs_t = "–"
            if truth is not None and label != "(t) truth (observer 1)":
                t = [x["dice_vessel_obs1"] for x in truth["runs"]]
                vs_t = format_difference(paired_difference(m, t), digits=1, scale=100)
            lines.append(
                f"| {name} | {label} | {vs_mv} | {vs_t} |"
                if has_truth
                else f"| {name} | {label} | {vs_mv} |"
            )
    return lines


def render(raw: dict[str, Any]) -> str:
    results, agreement, cfg = raw["results"], raw["agreement"], raw["config"]
    total = raw["seconds_total"]
    first = next(iter(next(iter(results.values())).values()))["runs"][0]
    n_ep, per_ep = first["epochs"], first["steps"] // first["epochs"]
    k_end = int(first["final_k"])
    has_confusion = any(
        r["method"].startswith("confusion") for rows in results.values() for r in rows.values()
    )
    lines = [
        "## Segmentation from several raters: re-weighting"
        + (", GAF loss and confusion matrices" if has_confusion else " and GAF loss")
        + " on DRIVE"
        + {"half": "", "paper": " (paper scale)", "converge": " at convergence"}[
            cfg.get("scale", "half")
        ],
        "",
        "Xiao et al. (2021) label re-weighting framework and Gaussian attention focal loss "
        "(`crowdmed.training.CrowdSegmenter`) against single-rater and consensus training, on "
        "the DRIVE test set with its two real observers and with five simulated raters drawn "
        f"from observer 1. Scale: {scale_text(cfg)}; 12 training / 2 "
        "validation / 6 test images; training on "
        f"{cfg.get('patches_per_image', 20)} random {cfg['patch']} × {cfg['patch']} "
        f"field-of-view patches per training image; {cfg['network']} (MONAI has no HRNet); "
        f"Adam lr {cfg['lr']:g}, batch {cfg['batch']}, {n_ep} epochs of {per_ep} steps "
        f"({n_ep * per_ep} "
        f"optimiser steps per run), re-weighting k + 1 every {k_text(cfg['k_every'])} (k ends "
        f"at {k_end}){aug_text(cfg)}; best epoch by vessel Dice on the 2 validation images "
        f"(observer 1); {len(cfg['seeds'])} seeds (network init, patches, order); 1 torch thread. "
        f"Test metrics inside the field of view, mean ± sd over seeds: Dice in points, HD95 in "
        f"pixels at the {'half' if cfg.get('down', 2) == 2 else 'full'} resolution (Dice: "
        f"`{cfg['dice']}`, HD95: `{cfg['hd95']}`). Wall time "
        f"{total / 60:.1f} min{parts_text(raw)}.",
        "",
        "**Rater agreement.** DRIVE observer 1 vs observer 2, full resolution: mean Dice "
        f"{agreement['drive_obs1_vs_obs2_full_res'][0]:.3f} "
        f"(range {agreement['drive_obs1_vs_obs2_full_res'][1]:.3f}–"
        f"{agreement['drive_obs1_vs_obs2_full_res'][2]:.3f}, 20 images); at the resolution "
        f"used here {agreement['drive_obs1_vs_obs2_half_res']:.3f}. Simulated raters: mean "
        f"pairwise Dice {agreement['simulated_pairwise']:.3f}; Dice with observer 1 (truth) per "
        "rater: "
        + ", ".join(
            f"{n} {v:.3f}" for n, v in zip(SIM_NAMES, agreement["simulated_vs_truth"], strict=True)
        )
        + ".",
        "",
    ]
    if cfg.get("scale") == "converge":
        lines += [
            "Compared with the section above (the same comparison after 240 optimiser steps, "
            "before the networks had learned): wider U-Net (16, 32, 64), 128-pixel patches, "
            "random flips and rotations, 5 times the steps and the paper's re-weighting "
            "schedule; the simulated setting trains one single rater (careful), and its truth "
            "row is the real setting's observer-1 run (the same patches, initialisation, order "
            "and target), scored against the simulated raters for the multi-rater metrics. "
            "Command: `python benchmarks/segmentation_learning.py --scale converge --only real "
            "--singles 0 --part real`, the same with `--only simulated --no-truth` split into "
            "parts by `--seed-list`, then `--scale converge --merge` of the parts.",
            "",
        ]
    if "qubiq_dice" in first:
        lines += [
            "**Multi-rater metrics** (against all raters of the setting, inside the field of "
            "view, mean over the 6 test images; `crowdmed.metrics`): QUBIQ Dice (the vessel "
            "probability and the raters' mean mask thresholded at 0.1…0.9, Dice averaged; "
            "points), ECE (10 bins, against the fraction of raters marking each pixel; points), "
            "GED² (squared generalised energy distance, d = 1 − IoU, empty pairs d = 0) and "
            "Hungarian-matched IoU (points) between the model's masks and the raters' masks. "
            "The model's masks are one per rater for the confusion methods (argmax of CMᵀp), "
            "else its single prediction.",
            "",
        ]
    for name, rows in results.items():
        title = (
            "Real raters (observers 1 and 2; majority vote of two = their intersection)"
            if name == "real"
            else "Simulated raters (5, from observer 1; truth = observer 1)"
        )
        lines += [f"### {title}", ""]
        has_multi = "qubiq_dice" in next(iter(rows.values()))["runs"][0]
        mh = (" | " + " | ".join(n for _k, n, _s in MULTI)) if has_multi else ""
        ms = "---:|" * len(MULTI) if has_multi else ""
        if name == "real":
            lines += [
                "| training target | vessel Dice vs obs 1 | vessel Dice vs obs 2 | "
                f"background Dice vs obs 1 | HD95 vs obs 1 | mean rater weights{mh} |",
                "|---|---:|---:|---:|---:|---|" + ms,
            ]
        else:
            lines += [
                "| training target | vessel Dice | background Dice | HD95 | mean rater weights"
                f"{mh} |",
                "|---|---:|---:|---:|---|" + ms,
            ]
        for label, r in rows.items():
            runs = r["runs"]

            def get(k: str, runs: list[dict[str, Any]] = runs) -> list[Any]:
                return [x[k] for x in runs]

            w = ""
            if "mean_weights" in runs[0]:
                w = " / ".join(f"{v:.2f}" for v in np.mean(get("mean_weights"), axis=0))
            if name == "real":
                lines.append(
                    f"| {label} | {fmt(get('dice_vessel_obs1'))} | {fmt(get('dice_vessel_obs2'))} "
                    f"| {fmt(get('dice_bg_obs1'))} | {fmt(get('hd95_obs1'), 1.0)} | {w}"
                    f"{multi_cells(runs)} |"
                )
            else:
                lines.append(
                    f"| {label} | {fmt(get('dice_vessel_obs1'))} | {fmt(get('dice_bg_obs1'))} "
                    f"| {fmt(get('hd95_obs1'), 1.0)} | {w}{multi_cells(runs)} |"
                )
        if name == "real" and "(b) consensus: STAPLE" in rows:
            mv = rows["(b) consensus: majority vote"]["runs"]
            stp = rows["(b) consensus: STAPLE"]["runs"]
            if all(
                x["dice_vessel_obs1"] == y["dice_vessel_obs1"] for x, y in zip(mv, stp, strict=True)
            ):
                lines += [
                    "",
                    "With two raters STAPLE returned the same consensus as the majority vote "
                    "(their intersection), so rows (b) coincide"
                    + (
                        " (the same runs, not trained twice)."
                        if rows["(b) consensus: STAPLE"].get("same_as")
                        else "."
                    ),
                ]
        lines.append("")
    # gains against the paper
    lines += [
        "### Gains over the majority-vote baseline vs Xiao et al. (2021)",
        "",
        "Mean vessel-Dice gain in points over training on the majority vote (paired per seed, "
        "with its 95 % t interval and verdict), next to the paper's mean-Dice gains on Gleason "
        "2019 with HRNet18.",
        "",
        "| method | paper (Gleason 2019) | DRIVE real observers (vs obs 1) "
        "| DRIVE simulated raters |",
        "|---|---:|---:|---:|",
    ]
    labels = {
        "gaf": "(c) GAF loss (on MV)",
        "reweight": "(d) re-weighting (CE)",
        "reweight-gaf": "(e) re-weighting + GAF",
    }
    base = "(b) consensus: majority vote"
    from crowdmed.metrics.stats import format_difference, paired_difference

    for key, label in labels.items():
        cells = []
        for name in ("real", "simulated"):
            if name not in results or label not in results[name]:
                cells.append("—")
                continue
            b = [x["dice_vessel_obs1"] for x in results[name][base]["runs"]]
            m = [x["dice_vessel_obs1"] for x in results[name][label]["runs"]]
            cells.append(format_difference(paired_difference(m, b), digits=1, scale=100))
        lines.append(f"| {label[4:]} | +{PAPER_GAINS[key]:.2f} | {cells[0]} | {cells[1]} |")
    lines += ["", *verdict(results, labels, base), "", *paired_table(results)]
    goal = confusion_goal(results)
    if goal:
        lines += ["", *goal]
    if any(
        x.get("val_curve") for rows in results.values() for r in rows.values() for x in r["runs"]
    ):
        lines += ["", *convergence_lines(results, raw.get("figure"))]
    lines += ["", *weights_finding(results, agreement)]
    lines += ["", raw["machine"], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
