"""Learning from two real radiologists (and a simulated crowd) on NIH ChestX-ray14 normal/abnormal.

Data: ``$CROWDMED_DATA/nih_cxr14_expert_readers`` (``CROWDMED_DATA`` defaults to
``<repo>/../shared/data``): 810 PA chest X-rays (256 px PNGs) that the same five
board-certified radiologists read as normal/abnormal (Nabulsi et al., Sci Rep 2021). The
reference label is the majority of the three designated "ground truth" readers
(:data:`REFERENCE_READERS`). **Those three readers are never used for training**: the real
experiment trains only on the two comparison readers (:data:`COMPARISON_READERS`), and the
reference is used for the validation metric (early stopping, learning rate) and the test metric.

Protocol:

1. Images are resized to ``--size`` px (PIL bilinear, antialiased) and standardised with the
   mean/sd of the training pixels. Patient-level split 60/20/20 (no patient in two splits),
   stratified by whether the patient has any abnormal reference image, seeded by
   ``--split-seed`` and the same for every method and seed.
2. Network: ``small_cnn(1, 2, width, depth=4)`` with its last linear layer zeroed
   (``zero_last_linear``) for every method, Adam, no weight decay, augmentation = random
   horizontal flip + random shift of up to ``size / 24`` px (replicate padding), no TTA.
   Early stopping on validation AUC against the reference (the kept weights are those of the
   best validation epoch). The learning rate is chosen on the validation set: DL-MV on the two
   real readers with a tuning seed (1000, not one of the reported seeds) for each candidate,
   best validation AUC wins, and that one rate is used for every method (no per-method tuning).
3. Real readers: ``reader-A``/``reader-B`` (``dl-true`` on that reader's labels), ``dl-mv``
   (two readers: a disagreement is a tie, broken uniformly at random by
   ``MajorityVote(random_state=seed)`` once per fit), ``crowd-layer-mw``, ``crowd-layer-vw+b``
   and ``aggnet`` (no quiz, so no trust prior; α/β start from ``BinarySensSpec``).
4. Simulated crowd: ``rodrigues_crowd(reference of all 810 images, 2, random_state=seed)``
   (annotators with accuracy 0.9/0.8/0.7/0.6 and one that flips 90 % of labels); the training
   rows are the training labels. ``dl-mv``, ``crowd-layer-mw`` and ``aggnet``.

Seeds ``0..--seeds-1`` drive weight initialisation, data order, augmentation, dropout,
tie-breaking and the simulated crowd. Metrics are test AUC and accuracy (argmax, i.e.
threshold 0.5) against the reference, mean ± sd over seeds; each method is compared with DL-MV
by the per-seed paired difference in test AUC with its 95 % t interval (better or worse only
when the interval excludes 0). The JSON keeps every per-seed number and per-epoch history;
``--report-only`` re-writes the section from it (keeping the machine line of the run).

Output: ``benchmarks/results/nih_cxr.json`` and the ``nih_cxr`` section of ``BENCHMARKS.md``
(through ``benchmarks/_report.py``; ``benchmarks/results/nih_cxr.md`` when that helper is
missing).

Fits run in ``--jobs 2`` worker processes with one torch thread each (on a shared 2-core
machine two threads in one process ran about 5x slower than one); every fit is seeded, so the
numbers do not depend on ``--jobs``. 30 fits of up to 40 epochs at 96 px: roughly 10-15 min on
2 idle cores (estimated from single-fit timings), 30+ min when the machine is busy.

Usage::

    python benchmarks/nih_cxr.py [--seeds 3] [--size 96] [--quick]
    python benchmarks/nih_cxr.py --report-only      # rebuild the markdown from the JSON
    python benchmarks/nih_cxr.py --experiments sim --lr 0.01 --patience 40 \\
        --no-report --output /tmp/sim_p40.json      # e.g. a check without early stopping
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATASET = "nih_cxr14_expert_readers"
LABEL_DIR = "gcs-public-data--healthcare-nih-chest-xray-labels/all_findings_expert_labels"
READERS_CSV = "all_findings_expert_labels_test_individual_readers.csv"
REFERENCE_CSV = "all_findings_expert_labels_test_labels.csv"
REFERENCE_READERS = (4343882785, 4343883593, 4343883996)  # never trained on
COMPARISON_READERS = (4343880271, 4343882583)  # "reader A", "reader B"
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
SPLITS = ("train", "val", "test")
TUNE_SEED = 1000
LR_GRID = (1e-3, 3e-3, 1e-2)

# (row name, CrowdClassifier method, which training labels)
REAL_METHODS = (
    ("reader-A", "dl-true", "A"),
    ("reader-B", "dl-true", "B"),
    ("dl-mv", "dl-mv", "AB"),
    ("crowd-layer-mw", "crowd-layer-mw", "AB"),
    ("crowd-layer-vw+b", "crowd-layer-vw+b", "AB"),
    ("aggnet", "aggnet", "AB"),
)
SIM_METHODS = (
    ("dl-mv", "dl-mv"),
    ("crowd-layer-mw", "crowd-layer-mw"),
    ("aggnet", "aggnet"),
)


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# ============================================================== data
def data_dir() -> Path:
    """The dataset folder; a clear error when it is missing."""
    base = Path(os.environ.get("CROWDMED_DATA", ROOT.parent / "shared" / "data"))
    folder = base / DATASET
    needed = [folder / LABEL_DIR / READERS_CSV, folder / LABEL_DIR / REFERENCE_CSV]
    if not folder.is_dir():
        raise FileNotFoundError(
            f"NIH ChestX-ray14 expert-reader data not found: {str(folder)!r} does not exist. Set "
            f"CROWDMED_DATA to the folder that contains {DATASET}/ (now {str(base)!r})."
        )
    missing = [str(p) for p in needed if not p.is_file()]
    if not (folder / "images_256").is_dir():
        missing.append(str(folder / "images_256"))
    if missing:
        raise FileNotFoundError(
            f"NIH ChestX-ray14 expert-reader data not found: missing {missing}. Set "
            f"CROWDMED_DATA to the folder that contains {DATASET}/ (now {str(base)!r})."
        )
    return folder


def load_data(folder: Path, size: int) -> dict[str, Any]:
    """Images ``(N, 1, size, size)`` in [0, 1], reader labels, reference and patient ids."""
    from PIL import Image

    reads = pd.read_csv(folder / LABEL_DIR / READERS_CSV)
    wide = reads.pivot(index="Image ID", columns="Reader ID", values="Abnormal")
    if wide.isna().any().any():
        raise ValueError("Every reader should read every image; found missing reads.")
    ref_table = pd.read_csv(folder / LABEL_DIR / REFERENCE_CSV).set_index("Image ID")
    ids = wide.index.to_numpy()
    reference = ref_table.loc[ids, "Abnormal"].map({"YES": 1, "NO": 0}).to_numpy(np.int64)
    gt_majority = (wide[list(REFERENCE_READERS)].sum(axis=1).to_numpy() >= 2).astype(np.int64)
    if not np.array_equal(gt_majority, reference):
        raise ValueError("The reference file is not the majority of the 3 designated readers.")
    patients = ref_table.loc[ids, "Patient ID"].to_numpy()
    images = np.empty((len(ids), 1, size, size), dtype=np.float32)
    for i, name in enumerate(ids):
        with Image.open(folder / "images_256" / name) as im:
            small = im.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        images[i, 0] = np.asarray(small, dtype=np.float32) / 255.0
    return {
        "image_ids": ids,
        "patients": patients,
        "images": images,
        "readers": wide[list(COMPARISON_READERS)].to_numpy(np.int64),  # (N, 2)
        "reference": reference,
    }


def patient_split(
    patients: np.ndarray, reference: np.ndarray, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Split code per image (0 train, 1 val, 2 test); no patient in two splits.

    Patients are stratified by "any abnormal reference image", shuffled with ``seed`` within
    their stratum, and each goes to the split furthest below its image-count target.
    """
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"patient": patients, "ref": reference})
    per_patient = table.groupby("patient").agg(n=("ref", "size"), pos=("ref", "max"))
    code = {}
    for _, stratum in per_patient.groupby("pos"):
        order = rng.permutation(len(stratum))
        target = np.asarray(SPLIT_FRACTIONS) * stratum["n"].sum()
        filled = np.zeros(3)
        for j in order:
            pid, n = stratum.index[j], int(stratum["n"].iloc[j])
            s = int(np.argmax(target - filled))
            code[pid] = s
            filled[s] += n
    split = np.array([code[p] for p in patients], dtype=np.int64)
    info = {
        "seed": seed,
        "fractions": list(SPLIT_FRACTIONS),
        "n_images": {name: int((split == s).sum()) for s, name in enumerate(SPLITS)},
        "n_patients": {name: len(np.unique(patients[split == s])) for s, name in enumerate(SPLITS)},
        "prevalence": {name: float(reference[split == s].mean()) for s, name in enumerate(SPLITS)},
    }
    return split, info


# ============================================================== metrics
def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC (Mann–Whitney, ties counted half)."""
    from crowdmed.metrics import roc_auc

    return roc_auc(scores, truth)


def reader_stats(labels: np.ndarray, reference: np.ndarray) -> dict[str, list[float]]:
    """Sensitivity, specificity, accuracy and positive rate of each column vs the reference."""
    from crowdmed.quality import sensitivity_specificity

    sens, spec = sensitivity_specificity(labels, reference)
    return {
        "sensitivity": sens.tolist(),
        "specificity": spec.tolist(),
        "balanced_accuracy": ((sens + spec) / 2).tolist(),
        "accuracy": (labels == reference[:, None]).mean(axis=0).tolist(),
        "positive_rate": labels.mean(axis=0).tolist(),
    }


# ============================================================== training
def make_augment(max_shift: int) -> Any:
    """Random horizontal flip and a random shift of up to ``max_shift`` px per image.

    Uses the torch RNG, which ``CrowdClassifier`` seeds with ``random_state`` during ``fit``.
    """
    import torch

    def augment(xb: torch.Tensor) -> torch.Tensor:
        b, _, h, w = xb.shape
        flip = torch.rand(b) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        if max_shift == 0:
            return xb
        pad = torch.nn.functional.pad(xb, (max_shift,) * 4, mode="replicate")
        dy = torch.randint(0, 2 * max_shift + 1, (b,)).tolist()
        dx = torch.randint(0, 2 * max_shift + 1, (b,)).tolist()
        return torch.stack([pad[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])

    return augment


def train_eval(
    method: str,
    labels: np.ndarray,
    data: dict[str, np.ndarray],
    seed: int,
    cfg: dict[str, Any],
    lr: float,
) -> dict[str, Any]:
    """Fit one network and evaluate it on the test split; raw numbers for the JSON."""
    import torch

    from crowdmed.nn.models import small_cnn, zero_last_linear
    from crowdmed.training import CrowdClassifier

    # fit seeds its own RNG, but the network is built before fit: seed its init here too
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = small_cnn(1, 2, width=cfg["width"], depth=cfg["depth"], dropout=cfg["dropout"])
    zero_last_linear(net)
    clf = CrowdClassifier(
        net,
        method=method,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        lr=lr,
        weight_decay=0.0,
        patience=cfg["patience"],
        augment=make_augment(cfg["max_shift"]),
        tta=False,
        random_state=seed,
        progress=False,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(data["x_train"], labels, X_val=data["x_val"], y_val=data["y_val"], n_classes=2)
    fit_seconds = time.perf_counter() - t0
    proba = clf.predict_proba(data["x_test"])[:, 1]
    y = data["y_test"]
    hist = clf.history_
    best = hist[clf.best_epoch_ - 1]
    conf = clf.annotator_confusion_
    return {
        "test_auc": auc(proba, y),
        "test_accuracy": float(((proba >= 0.5).astype(int) == y).mean()),
        "test_positive_rate": float((proba >= 0.5).mean()),
        "val_auc": float(best.get("val_auc", float("nan"))),
        "best_epoch": clf.best_epoch_,
        "epochs_run": len(hist),
        "fit_seconds": fit_seconds,
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in hist])),
        "annotator_sensitivity": None if conf is None else conf[:, 1, 1].tolist(),
        "annotator_specificity": None if conf is None else conf[:, 0, 0].tolist(),
        "history": [{k: round(float(v), 5) for k, v in h.items() if k != "epoch"} for h in hist],
    }


# ============================================================== parallel fits
_WORKER: dict[str, Any] = {}


def _init_worker(data: dict[str, np.ndarray], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["data"] = data


def _fit_task(spec: tuple[Any, ...]) -> tuple[Any, dict[str, Any]]:
    key, method, labels, seed, cfg, lr = spec
    return key, train_eval(method, labels, _WORKER["data"], seed, cfg, lr)


class Runner:
    """Run fits in ``jobs`` single-threaded worker processes (``jobs=1``: in this process).

    Every fit is seeded, so the numbers do not depend on ``jobs``; the time per epoch does.
    """

    def __init__(self, data: dict[str, np.ndarray], jobs: int, threads: int) -> None:
        self.data, self.jobs, self.threads = data, jobs, threads
        self.pool: Any = None

    def __enter__(self) -> Runner:
        if self.jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(
                self.jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.data, self.threads),
            )
        else:
            _init_worker(self.data, self.threads)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def map(self, specs: list[tuple[Any, ...]]) -> dict[Any, dict[str, Any]]:
        out: dict[Any, dict[str, Any]] = {}
        if self.pool is None:
            results: Any = map(_fit_task, specs)
        else:
            from concurrent.futures import as_completed

            results = (
                f.result() for f in as_completed([self.pool.submit(_fit_task, s) for s in specs])
            )
        for key, r in results:
            out[key] = r
            log(
                f"{' '.join(map(str, key)):40s} test AUC {r['test_auc']:.3f} acc "
                f"{r['test_accuracy']:.3f} (val {r['val_auc']:.3f}, epoch {r['best_epoch']}/"
                f"{r['epochs_run']}, {r['seconds_per_epoch']:.1f}s/epoch) [{len(out)}/{len(specs)}]"
            )
        return out


# ============================================================== experiment
def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from crowdmed.aggregation import MajorityVote
    from crowdmed.simulate import rodrigues_crowd

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    folder = data_dir()
    raw = load_data(folder, args.size)
    split, split_info = patient_split(raw["patients"], raw["reference"], args.split_seed)
    tr, va, te = (split == 0), (split == 1), (split == 2)
    mean, sd = float(raw["images"][tr].mean()), float(raw["images"][tr].std())
    images = (raw["images"] - mean) / sd
    ref = raw["reference"]
    data = {
        "x_train": images[tr],
        "x_val": images[va],
        "y_val": ref[va],
        "x_test": images[te],
        "y_test": ref[te],
    }
    readers_tr = raw["readers"][tr]
    log(
        f"loaded {len(ref)} images at {args.size} px in {time.perf_counter() - t_start:.1f}s; "
        f"split {split_info['n_images']} images, {split_info['n_patients']} patients"
    )
    cfg = {
        "size": args.size,
        "width": args.width,
        "depth": 4,
        "dropout": 0.2,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "patience": args.patience,
        "max_shift": max(1, round(args.size / 24)),
        "threads": args.threads,
        "jobs": args.jobs,
    }
    seeds = list(range(args.seeds))

    # ---- reader statistics (test split) and agreement (training split)
    stats: dict[str, Any] = {
        "readers": {"A": COMPARISON_READERS[0], "B": COMPARISON_READERS[1]},
        "test": reader_stats(raw["readers"][te], ref[te]),
        "train": reader_stats(readers_tr, ref[tr]),
        "soft_vote_test_auc": auc(raw["readers"][te].mean(axis=1), ref[te]),
        "train_agreement": float((readers_tr[:, 0] == readers_tr[:, 1]).mean()),
        "train_ties": int((readers_tr[:, 0] != readers_tr[:, 1]).sum()),
        "prevalence": {**split_info["prevalence"], "all": float(ref.mean())},
    }
    mv_acc = [
        float((MajorityVote(random_state=s).fit(readers_tr, n_classes=2).labels_ == ref[tr]).mean())
        for s in seeds
    ]
    stats["dl_mv_train_label_accuracy"] = mv_acc

    # ---- simulated crowd on the reference labels (drawn here, trained below)
    sim_labels: dict[int, np.ndarray] = {}
    sim_info: list[dict[str, Any]] = []
    for seed in seeds:
        crowd = rodrigues_crowd(ref, 2, random_state=seed)
        sim_labels[seed] = sim_tr = crowd.labels[tr]
        mv_sim = MajorityVote(random_state=seed).fit(sim_tr, n_classes=2).labels_
        sim_info.append(
            {
                "seed": seed,
                "train_accuracy": (sim_tr == ref[tr][:, None]).mean(axis=0).tolist(),
                "mv_train_label_accuracy": float((mv_sim == ref[tr]).mean()),
                "confusion": crowd.confusion.tolist(),
            }
        )

    with Runner(data, args.jobs, args.threads) as runner:
        # ---- learning rate on the validation set
        tuning: list[dict[str, Any]] = []
        if args.lr is not None:
            lr = args.lr
        else:
            specs = [(("tune", c), "dl-mv", readers_tr, TUNE_SEED, cfg, c) for c in LR_GRID]
            for (_, cand), r in sorted(runner.map(specs).items()):
                tuning.append({"lr": cand, "val_auc": r["val_auc"], "best_epoch": r["best_epoch"]})
                log(f"tune lr={cand:g}: val AUC {r['val_auc']:.3f} (epoch {r['best_epoch']})")
            lr = max(tuning, key=lambda t: t["val_auc"])["lr"]
        cfg["lr"] = lr
        log(f"lr = {lr:g}")

        columns = {"A": readers_tr[:, 0], "B": readers_tr[:, 1], "AB": readers_tr}
        rows = [("real", name, method, columns[cols]) for name, method, cols in REAL_METHODS]
        specs = [
            ((exp, seed, name, method), method, labels, seed, cfg, lr)
            for seed in seeds
            for exp, name, method, labels in rows
            if "real" in args.experiments
        ]
        specs += [
            (("sim", seed, name, method), method, sim_labels[seed], seed, cfg, lr)
            for seed in seeds
            for name, method in SIM_METHODS
            if "sim" in args.experiments
        ]
        done = runner.map(specs)
    runs = []
    for spec in specs:
        exp, seed, name, method = spec[0]
        runs.append(
            {"experiment": exp, "name": name, "method": method, "seed": seed, **done[spec[0]]}
        )

    wall = time.perf_counter() - t_start
    log(f"done in {wall / 60:.1f} min")
    return {
        "benchmark": "nih_cxr",
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "experiments": list(args.experiments),
        "seeds": seeds,
        "config": cfg,
        "lr_tuning": {"seed": TUNE_SEED, "grid": list(LR_GRID), "results": tuning},
        "split": {
            **split_info,
            "image_ids": {
                name: raw["image_ids"][split == s].tolist() for s, name in enumerate(SPLITS)
            },
        },
        "normalisation": {"mean": mean, "sd": sd},
        "reader_stats": stats,
        "simulated_crowd": sim_info,
        "runs": runs,
        "wall_seconds": wall,
        "environment": {
            "python": platform.python_version(),
            "torch": metadata.version("torch"),
            "monai": metadata.version("monai"),
            "crowdmed": metadata.version("crowdmed"),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "jobs": args.jobs,
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
        },
    }


# ============================================================== report
def _ms(values: list[float], digits: int = 3) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _paired(method: pd.Series, base: pd.Series) -> tuple[str, str]:
    """Per-seed paired difference ``method − base`` (Series indexed by seed): cell, verdict."""
    from crowdmed.metrics.stats import format_difference, paired_difference

    both = method.index.intersection(base.index)
    r = paired_difference(method[both].to_numpy(float), base[both].to_numpy(float))
    return format_difference(r, digits=3), r.verdict


def _kept_machine_line() -> str | None:
    """The machine line of the section as written by the run (JSON files before it was kept)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _paired import section_line  # type: ignore[import-not-found]
    except ImportError:
        return None
    finally:
        sys.path.pop(0)
    return section_line("nih_cxr", "Machine:")


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def markdown(res: dict[str, Any], machine: str | None) -> str:
    cfg, st, sp = res["config"], res["reader_stats"], res["split"]
    runs = pd.DataFrame(res["runs"])
    n_seeds = len(res["seeds"])
    epoch_s = runs["seconds_per_epoch"].mean()
    out: list[str] = []
    out.append("## NIH ChestX-ray14 normal/abnormal: two real radiologists and a simulated crowd")
    out.append("")
    out.append(
        "`python benchmarks/nih_cxr.py` (raw per-seed numbers, per-epoch histories and the split "
        "in `benchmarks/results/nih_cxr.json`)."
        + (" **Quick run: not a result.**" if res["quick"] else "")
    )
    if machine:
        out.append("")
        out.append(machine)
    out.append("")
    out.append(
        f"810 PA chest X-rays read normal/abnormal by the same 5 radiologists (Nabulsi et al., "
        f"Sci Rep 2021). Reference = majority of the 3 designated readers; the models only ever "
        f"train on the 2 comparison readers A ({st['readers']['A']}) and B ({st['readers']['B']}) "
        f"or on simulated labels. Patient-level split {sp['n_images']['train']}/"
        f"{sp['n_images']['val']}/{sp['n_images']['test']} images "
        f"({sp['n_patients']['train']}/{sp['n_patients']['val']}/{sp['n_patients']['test']} "
        f"patients, seed {sp['seed']}, stratified by any-abnormal), the same for every method and "
        f"seed. Reference prevalence (abnormal): train {_pct(st['prevalence']['train'])}, val "
        f"{_pct(st['prevalence']['val'])}, test {_pct(st['prevalence']['test'])}, all "
        f"{_pct(st['prevalence']['all'])}."
    )
    out.append("")
    tune = res["lr_tuning"]["results"]
    tune_txt = (
        "chosen on validation AUC of DL-MV (real readers, seed "
        f"{res['lr_tuning']['seed']}) from "
        + ", ".join(f"{t['lr']:g} → {t['val_auc']:.3f}" for t in tune)
        if tune
        else "given on the command line"
    )
    out.append(
        f"Setup: {cfg['size']} px, `small_cnn(1, 2, width={cfg['width']}, depth={cfg['depth']}, "
        f"dropout={cfg['dropout']})` with the last linear layer zeroed, batch {cfg['batch_size']}, "
        f"Adam lr {cfg['lr']:g} ({tune_txt}), no weight decay, at most {cfg['epochs']} epochs with "
        f"early stopping on validation AUC (patience {cfg['patience']}; weights of the best "
        f"validation epoch kept), augmentation = random horizontal flip + shift ≤ "
        f"{cfg['max_shift']} px, no TTA. Seeds {res['seeds']} (init, data order, augmentation, "
        f"tie-breaking, simulated crowd). {cfg.get('jobs', 1)} fits in parallel with "
        f"{cfg['threads']} torch thread each. Mean time per epoch "
        f"(incl. validation) {epoch_s:.1f} s; total wall time {res['wall_seconds'] / 60:.1f} min "
        f"({len(runs)} fits + {len(tune)} tuning fits)." + _load_note(res)
    )
    out.append("")

    # ---- reader statistics
    out.append(
        "**Readers vs the reference (test split).** Balanced accuracy = (sens + spec) / 2 "
        "is the AUC of a single binary read."
    )
    out.append("")
    out.append(
        "| reader | sensitivity | specificity | balanced acc. | accuracy | called abnormal |"
    )
    out.append("|---|---:|---:|---:|---:|---:|")
    t = st["test"]
    for j, who in enumerate(("A", "B")):
        out.append(
            f"| {who} ({st['readers'][who]}) | {t['sensitivity'][j]:.3f} | "
            f"{t['specificity'][j]:.3f} | {t['balanced_accuracy'][j]:.3f} | "
            f"{t['accuracy'][j]:.3f} | {_pct(t['positive_rate'][j])} |"
        )
    out.append("")
    out.append(
        f"Soft vote of A and B (0, ½, 1) as a score: test AUC {st['soft_vote_test_auc']:.3f}. "
        f"On the training split A and B agree on {_pct(st['train_agreement'])} of images; the "
        f"{st['train_ties']} disagreements are ties for DL-MV, broken uniformly at random by "
        f"`MajorityVote(random_state=seed)` once per fit (DL-MV training-label accuracy vs the "
        f"reference {_ms(st['dl_mv_train_label_accuracy'])} over seeds)."
    )
    out.append("")

    def table(exp: str, names: list[str], with_delta: bool) -> None:
        sub = runs[runs["experiment"] == exp]
        base = sub[sub["name"] == "dl-mv"].set_index("seed")["test_auc"]
        head = "| method | test AUC | test accuracy | val AUC | best epoch | s/epoch |"
        sep = "|---|---:|---:|---:|---:|---:|"
        if with_delta:
            head += " ΔAUC vs DL-MV (paired, 95 % CI) | wins |"
            sep += "---:|---:|"
        out.append(head)
        out.append(sep)
        for name in names:
            r = sub[sub["name"] == name]
            if r.empty:
                continue
            row = (
                f"| {name} | {_ms(r['test_auc'].tolist())} | {_ms(r['test_accuracy'].tolist())} | "
                f"{_ms(r['val_auc'].tolist())} | {_ms(r['best_epoch'].tolist(), 1)} | "
                f"{r['seconds_per_epoch'].mean():.1f} |"
            )
            if with_delta:
                if name == "dl-mv":
                    row += " — | — |"
                else:
                    d = r.set_index("seed")["test_auc"] - base
                    cell, _ = _paired(r.set_index("seed")["test_auc"], base)
                    row += f" {cell} | {int((d > 0).sum())}/{len(d)} |"
            out.append(row)
        out.append("")

    out.append(
        f"**Real readers** (test AUC/accuracy vs the reference, mean ± sd over {n_seeds} seeds; "
        "accuracy at threshold 0.5). ΔAUC: mean of the per-seed differences from DL-MV (same "
        "seed = same initial weights, data order and augmentation) with its 95 % t interval; a "
        "method is better or worse than DL-MV only when the interval excludes 0. Wins: seeds "
        "with a higher test AUC than DL-MV."
    )
    out.append("")
    table("real", [n for n, _, _ in REAL_METHODS], with_delta=True)
    out.append(_estimates_table(res, runs))

    sim = res["simulated_crowd"]
    acc = np.asarray([s["train_accuracy"] for s in sim]).mean(axis=0)
    mv = [s["mv_train_label_accuracy"] for s in sim]
    out.append(
        "**Simulated crowd** (`rodrigues_crowd(reference, 2, random_state=seed)`: accuracy on the "
        "training split " + ", ".join(f"{a:.2f}" for a in acc) + "; majority-vote label accuracy "
        f"{_ms(mv)}). Test AUC vs the reference."
    )
    out.append("")
    table("sim", [n for n, _ in SIM_METHODS], with_delta=True)
    out.append(_sim_estimates_table(res, runs))
    sub = runs[runs["experiment"] == "sim"]
    base = sub[sub["name"] == "dl-mv"].set_index("seed")["test_auc"]
    verdicts: list[str] = []
    words: list[str] = []
    for name, label in (("aggnet", "AggNet"), ("crowd-layer-mw", "CL (MW)")):
        m = sub[sub["name"] == name].set_index("seed")["test_auc"]
        d = m - base
        if d.empty:
            continue
        cell, word = _paired(m, base)
        words.append(word)
        verdicts.append(
            f"{label} against DL-MV: {word} (ΔAUC {cell.rsplit(', ', 1)[0]}; higher in "
            f"{int((d > 0).sum())} of {len(d)} seeds)"
        )
    met = "met" if words and all(w == "better" for w in words) else "not shown"
    out.append(
        "Target (AggNet and CL beat DL-MV on the simulated crowd), paired per seed with 95 % t "
        f"intervals: {met}. " + "; ".join(verdicts) + "."
    )
    out.append("")
    early = runs[runs["best_epoch"] <= 5]
    if len(early):
        out.append(
            "Early stopping kept a very early epoch (≤ 5; validation AUC is noisy with "
            f"{round(sp['n_images']['val'] * (1 - st['prevalence']['val']))} negative validation "
            "images) in: "
            + ", ".join(
                f"{r['experiment']} {r['name']} seed {r['seed']} (epoch {r['best_epoch']})"
                for _, r in early.iterrows()
            )
            + "."
        )
        out.append("")
    out.append(
        "Accuracy at threshold 0.5 swings between seeds because the output bias of the kept "
        "epoch varies; AUC is the primary metric."
    )
    out.append("")
    return "\n".join(out)


def _load_note(res: dict[str, Any]) -> str:
    env = res.get("environment", {})
    if "load_average_start" not in env:
        return ""
    a, b = env["load_average_start"][1], env["load_average_end"][1]
    return (
        f" The machine was shared: 5-minute load average {a:.1f} at the start and {b:.1f} at "
        f"the end on {env.get('cpu_count')} cores, so the times are pessimistic."
    )


def _sim_estimates_table(res: dict[str, Any], runs: pd.DataFrame) -> str:
    """Simulated annotators: sensitivity/specificity drawn vs learnt (mean over seeds)."""
    conf = np.asarray([s["confusion"] for s in res["simulated_crowd"]]).mean(axis=0)
    n = conf.shape[0]
    rows = [
        "Simulated annotators' sensitivity / specificity: as simulated vs as estimated by the "
        "models (mean over seeds; the crowd layer's matrices are softmax outputs for a one-hot "
        "bottleneck, so an identity layer reads 0.73, not 1).",
        "",
        "| | " + " | ".join(f"ann. {j}" for j in range(n)) + " |",
        "|---|" + "---:|" * n,
        "| simulated | "
        + " | ".join(f"{conf[j, 1, 1]:.2f} / {conf[j, 0, 0]:.2f}" for j in range(n))
        + " |",
    ]
    sim = runs[runs["experiment"] == "sim"]
    for name in ("crowd-layer-mw", "aggnet"):
        r = sim[sim["name"] == name]
        if r.empty or r["annotator_sensitivity"].isna().any():
            continue
        sens = np.asarray(r["annotator_sensitivity"].tolist()).mean(axis=0)
        spec = np.asarray(r["annotator_specificity"].tolist()).mean(axis=0)
        rows.append(
            f"| {name} | " + " | ".join(f"{sens[j]:.2f} / {spec[j]:.2f}" for j in range(n)) + " |"
        )
    rows.append("")
    return "\n".join(rows)


def _estimates_table(res: dict[str, Any], runs: pd.DataFrame) -> str:
    """Sensitivity/specificity of A and B learnt by the crowd models vs measured on train."""
    st = res["reader_stats"]["train"]
    rows = [
        "Reader sensitivity / specificity on the training split: measured against the reference "
        "vs estimated by the models (mean over seeds).",
        "",
        "| | A sens | A spec | B sens | B spec |",
        "|---|---:|---:|---:|---:|",
        "| measured (train vs reference) | "
        + " | ".join(f"{st[k][j]:.2f}" for j in range(2) for k in ("sensitivity", "specificity"))
        + " |",
    ]
    real = runs[runs["experiment"] == "real"]
    for name in ("crowd-layer-mw", "crowd-layer-vw+b", "aggnet"):
        r = real[real["name"] == name]
        if r.empty or r["annotator_sensitivity"].isna().any():
            continue
        sens = np.asarray(r["annotator_sensitivity"].tolist()).mean(axis=0)
        spec = np.asarray(r["annotator_specificity"].tolist()).mean(axis=0)
        rows.append(
            f"| {name} | "
            + " | ".join(f"{v:.2f}" for j in range(2) for v in (sens[j], spec[j]))
            + " |"
        )
    rows.append("")
    return "\n".join(rows)


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """``_report.write_json`` (NaN → null) when present, else plain JSON written atomically."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _report import write_json as report_write_json  # type: ignore[import-not-found]
    except ImportError:
        from crowdmed._io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
        return
    finally:
        sys.path.pop(0)
    report_write_json(path, obj)


def machine_line() -> str | None:
    try:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from _report import machine_line as ml  # type: ignore[import-not-found]
    except ImportError:
        return None
    finally:
        sys.path.pop(0)
    return str(ml())


def publish(md: str) -> str:
    """Write the section through ``_report.update_section``; a standalone file as fallback."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _report import update_section  # type: ignore[import-not-found]
    except ImportError:
        from crowdmed._io import atomic_path

        path = RESULTS / "nih_cxr.md"
        with atomic_path(path) as tmp:
            tmp.write_text(md + "\n", encoding="utf-8")
        return str(path)
    finally:
        sys.path.pop(0)
    update_section("nih_cxr", md)
    return "BENCHMARKS.md (section nih_cxr)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..n-1)")
    parser.add_argument("--size", type=int, default=96, help="image size in px (96 or 128)")
    parser.add_argument("--width", type=int, default=16, help="small_cnn width")
    parser.add_argument("--epochs", type=int, default=40, help="maximum epochs")
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None, help="skip tuning, use this rate")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared 2-core machine 2 threads ran ~5x slower)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="fits in parallel (worker processes)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs, lr 1e-3")
    parser.add_argument(
        "--experiments",
        nargs="+",
        choices=("real", "sim"),
        default=["real", "sim"],
        help="which experiments to run",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path")
    parser.add_argument("--no-report", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the markdown from the JSON"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.patience = 1, 3, None
        args.lr = 1e-3 if args.lr is None else args.lr
    if args.output is not None:
        out = args.output
    elif args.quick:  # never next to the real results
        out = Path(tempfile.gettempdir()) / "nih_cxr_quick.json"
    else:
        out = RESULTS / "nih_cxr.json"

    if args.report_only:
        res = json.loads(out.read_text(encoding="utf-8"))
        machine = res.get("machine") or _kept_machine_line() or machine_line()
    else:
        try:
            res = run(args)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        machine = res["machine"] = machine_line()
        write_json(out, res)
        log(f"wrote {out}")
    md = markdown(res, machine)
    print(md)
    if res["quick"] or args.no_report:
        log("BENCHMARKS.md not updated")
    else:
        log(f"wrote {publish(md)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
