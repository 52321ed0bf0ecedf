"""Speed, memory and accuracy of crowdmed's aggregators against crowd-kit 1.4.2.

Writes the ``aggregation`` section of ``BENCHMARKS.md`` at the repository root (through
``benchmarks/_report.py``: atomic, other sections left alone) and the raw numbers to
``benchmarks/results/aggregation.json``. Three parts:

1. **Speed and memory** on seeded synthetic data (1,000 annotators with random confusion
   matrices, 10 labels per item): MajorityVote, DawidSkene, OneCoinDawidSkene and GLAD, both
   libraries run for the same number of iterations. Every fit runs in a fresh subprocess; the
   wall time covers ``fit`` only, and memory is the peak resident set size (RSS) during ``fit``
   above the RSS just before it (the Linux ``VmHWM`` counter, reset before the fit through
   ``/proc/self/clear_refs``). RSS is used rather than ``tracemalloc`` because it also sees the
   memory of compiled code (scipy.sparse, pandas) that does not report to ``tracemalloc``.
2. **Scale**: our DawidSkene on 10M labels (K = 5, 10,000 annotators) to its default tolerance.
3. **Accuracy** against gold of every method at each library's default settings on every real
   classification dataset with gold labels and annotator ids in ``CROWDMED_DATA``.

Usage::

    python benchmarks/aggregation.py            # full run, 15-30 min on 2 cores
    python benchmarks/aggregation.py --quick    # 100k labels only, no 10M run; prints
"""

from __future__ import annotations

import os

# One BLAS thread unless the caller says otherwise, set before numpy loads (children inherit
# it). On this 2-core, shared machine a multithreaded OpenBLAS makes each small dot product in
# the conjugate-gradient M-step of GLAD (either library) up to 100x slower under load.
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _var in BLAS_VARS:
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _report import machine_line, update_section, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "benchmarks/results/aggregation.json"
SPEED_METHODS = ("MV", "DS", "OneCoin", "GLAD")
ACC_METHODS = ("MV", "Wawa", "DS", "OneCoin", "GLAD")
DS_ITERS = 10  # fixed EM iterations of DS and OneCoin in the speed runs
GLAD_ITERS = {100_000: 2, 1_000_000: 1}  # M-steps of GLAD in the speed runs
TARGET_DS, TARGET_GLAD, TARGET_ACC = 15.0, 50.0, 0.002


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# ============================================================== memory probes (Linux)
def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return False
    return True


# ============================================================== synthetic data
def synthetic(
    n_labels: int, k: int, n_annotators: int, seed: int, per_item: int = 10
) -> dict[str, np.ndarray]:
    """Labels of annotators with random confusion matrices; every item gets ``per_item``."""
    rng = np.random.default_rng(seed)
    n_items = n_labels // per_item
    truth = rng.choice(k, size=n_items, p=rng.dirichlet(np.full(k, 5.0)))
    ann = rng.integers(0, n_annotators, size=(n_items, per_item))
    while True:  # distinct annotators per item: redraw the rows with a repeat
        srt = np.sort(ann, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
        if not dup.any():
            break
        ann[dup] = rng.integers(0, n_annotators, size=(int(dup.sum()), per_item))
    # confusion[a, k, :] ~ Dirichlet(1 + s_a K e_k), s_a ~ U(0.3, 4); 10 % spammers whose
    # labels do not depend on the true class.
    strength = rng.uniform(0.3, 4.0, n_annotators)
    alpha = 1.0 + strength[:, None, None] * k * np.eye(k)
    conf = rng.gamma(alpha)
    conf /= conf.sum(axis=2, keepdims=True)
    spam = rng.random(n_annotators) < 0.1
    conf[spam] = rng.dirichlet(np.ones(k), size=int(spam.sum()))[:, None, :]
    cum = np.cumsum(conf, axis=2)
    items = np.repeat(np.arange(n_items, dtype=np.int64), per_item)
    annotators = ann.ravel().astype(np.int64)
    labels = np.empty(len(items), dtype=np.int64)
    step = 1_000_000
    for s in range(0, len(items), step):
        c = cum[annotators[s : s + step], truth[items[s : s + step]]]
        u = rng.random(len(c))
        labels[s : s + step] = np.minimum((u[:, None] > c).sum(axis=1), k - 1)
    return {
        "items": items,
        "annotators": annotators,
        "labels": labels,
        "truth": truth,
        "shape": np.array([n_items, n_annotators, k]),
    }


# ============================================================== real datasets
ACT = "active_crowd_toolkit/Data"
VLDB = "truth_inference_vldb17/datasets"
NIH = (
    "nih_cxr14_expert_readers/gcs-public-data--healthcare-nih-chest-xray-labels/"
    "four_findings_expert_labels"
)


@dataclass
class Dataset:
    name: str
    path: str  # relative to the data folder; the dataset is skipped when it is missing
    load: Callable[[Path], Any]  # -> CrowdLabels with gold
    note: str = ""


def _act(file: str) -> Callable[[Path], Any]:
    def load(root: Path) -> Any:
        from crowdmed.data.io import read_labels

        # ZenCrowd_* and CF_amt repeat (worker, task) pairs: keep the first label.
        return read_labels(root / ACT / file, on_duplicate="first")

    return load


def _vldb(folder: str) -> Callable[[Path], Any]:
    def load(root: Path) -> Any:
        from crowdmed.data.io import from_long_frame

        d = root / VLDB / folder
        ans = pd.read_csv(d / "answer.csv")
        truth = pd.read_csv(d / "truth.csv")
        classes = np.union1d(ans["answer"].unique(), truth["truth"].unique())
        cl = from_long_frame(
            ans, item="question", annotator="worker", label="answer", classes=classes
        )
        gold = pd.Series(truth["truth"].to_numpy(), index=truth["question"])
        return cl.with_gold(pd.Index(classes).get_indexer(gold.reindex(cl.item_ids).to_numpy()))

    return load


def _labelme(root: Path) -> Any:
    from crowdmed.data import CrowdLabels

    d = root / "labelme_sentiment_pylearningcrowds/data/LabelMe"
    ans = np.loadtxt(d / "answers.txt", dtype=np.int64)
    gold = np.loadtxt(d / "LabelMe_Z_train.txt", dtype=np.int64)
    return CrowdLabels.from_dense(ans, n_classes=8, gold=gold)


def _cifar10n(root: Path) -> Any:
    import pickle
    import zipfile

    from crowdmed.data import CrowdLabels

    d = root / "cifar10n"
    with zipfile.ZipFile(d / "data/CIFAR-10_human.pt") as z:
        name = next(n for n in z.namelist() if n.endswith("data.pkl"))
        arrays = pickle.load(z.open(name))  # a dict of numpy arrays; no torch needed
    labels = np.stack([arrays[f"random_label{j}"] for j in (1, 2, 3)], axis=1)
    side = pd.read_csv(d / "side_info_cifar10N.csv")
    start = side["Image-batch"].str.split("--").str[0].astype(int).to_numpy()
    workers = side[["Worker1-id", "Worker2-id", "Worker3-id"]].to_numpy()[np.argsort(start)]
    workers = np.repeat(workers, 10, axis=0)  # batches of 10 consecutive images
    _, ann = np.unique(workers.ravel(), return_inverse=True)
    n = len(labels)
    return CrowdLabels.from_triplets(
        np.repeat(np.arange(n), 3), ann, labels.ravel(), n_classes=10, gold=arrays["clean_label"]
    )


def _nih(finding: str, gold_col: str) -> Callable[[Path], Any]:
    def load(root: Path) -> Any:
        from crowdmed.data.io import from_long_frame

        d = root / NIH
        reads = pd.read_csv(d / "four_findings_expert_labels_individual_readers.csv")
        reads = reads[reads[finding] != "HEDGE"]  # "uncertain": treated as no label
        ref = pd.concat(
            [
                pd.read_csv(d / "four_findings_expert_labels_test_labels.csv"),
                pd.read_csv(d / "four_findings_expert_labels_validation_labels.csv"),
            ]
        )
        df = pd.DataFrame(
            {
                "item": reads["Image ID"],
                "annotator": reads["Reader ID"],
                "label": (reads[finding] == "YES").astype(int),
            }
        )
        cl = from_long_frame(df, classes=[0, 1], on_duplicate="first")
        gold = pd.Series((ref[gold_col] == "YES").astype(int).to_numpy(), index=ref["Image Index"])
        return cl.with_gold(gold.reindex(cl.item_ids).fillna(-1).astype(int).to_numpy())

    return load


def _chexpert(root: Path) -> Any:
    from crowdmed.data.io import from_long_frame

    d = root / "chexpert_test_radiologists"
    gt = pd.read_csv(d / "groundtruth.csv").set_index("Study")
    findings = list(gt.columns)
    parts = []
    for reader in ("bc4", "bc6", "bc8"):
        r = pd.read_csv(d / f"radiologists/benchmark_radiologists/{reader}.csv").set_index("Study")
        long = r[findings].stack().rename("label").reset_index()
        long.columns = ["study", "finding", "label"]
        long["item"] = long["study"] + "|" + long["finding"]
        long["annotator"] = reader + "|" + long["finding"]  # one confusion per reader × finding
        parts.append(long[["item", "annotator", "label"]])
    cl = from_long_frame(pd.concat(parts, ignore_index=True), classes=[0, 1])
    g = gt[findings].stack()
    g.index = [f"{s}|{f}" for s, f in g.index]
    return cl.with_gold(g.reindex(cl.item_ids).to_numpy().astype(int))


DATASETS = [
    Dataset("ACT CF", f"{ACT}/CF.csv", _act("CF.csv")),
    Dataset(
        "ACT CF_amt",
        f"{ACT}/CF_amt.csv",
        _act("CF_amt.csv"),
        "5 repeated (worker, task) rows: first kept",
    ),
    Dataset("ACT MS", f"{ACT}/MS.csv", _act("MS.csv")),
    Dataset("ACT SP", f"{ACT}/SP.csv", _act("SP.csv"), "= PyLearningCrowds Sentiment"),
    Dataset("ACT SP_amt", f"{ACT}/SP_amt.csv", _act("SP_amt.csv")),
    Dataset(
        "ACT ZenCrowd_all",
        f"{ACT}/ZenCrowd_all.csv",
        _act("ZenCrowd_all.csv"),
        "repeated rows: first kept",
    ),
    Dataset(
        "ACT ZenCrowd_in",
        f"{ACT}/ZenCrowd_in.csv",
        _act("ZenCrowd_in.csv"),
        "repeated rows: first kept",
    ),
    Dataset(
        "ACT ZenCrowd_us",
        f"{ACT}/ZenCrowd_us.csv",
        _act("ZenCrowd_us.csv"),
        "repeated rows: first kept",
    ),
    Dataset(
        "VLDB17 Duck",
        f"{VLDB}/d_Duck Identification",
        _vldb("d_Duck Identification"),
        "= CUBAM bluebirds",
    ),
    Dataset("VLDB17 Product", f"{VLDB}/d_jn-product", _vldb("d_jn-product")),
    Dataset("VLDB17 Dog", f"{VLDB}/s4_Dog data", _vldb("s4_Dog data")),
    Dataset(
        "VLDB17 Face",
        f"{VLDB}/s4_Face Sentiment Identification",
        _vldb("s4_Face Sentiment Identification"),
    ),
    Dataset("LabelMe (train)", "labelme_sentiment_pylearningcrowds/data/LabelMe", _labelme),
    Dataset(
        "CIFAR-10N",
        "cifar10n/data/CIFAR-10_human.pt",
        _cifar10n,
        "worker ids from side_info (batch order)",
    ),
    Dataset("NIH CXR14 fracture", NIH, _nih("Fracture", "Fracture")),
    Dataset("NIH CXR14 pneumothorax", NIH, _nih("Pneumothorax", "Pneumothorax"), "HEDGE dropped"),
    Dataset("NIH CXR14 opacity", NIH, _nih("Airspace opacity", "Airspace opacity")),
    Dataset("NIH CXR14 nodule/mass", NIH, _nih("Nodule/mass", "Nodule or mass"), "HEDGE dropped"),
    Dataset(
        "CheXpert 3 readers",
        "chexpert_test_radiologists",
        _chexpert,
        "14 findings pooled; annotator = reader × finding",
    ),
]
EXCLUDED = [
    "VLDB17 Emotion (numeric scores, not classes)",
    "CUBAM ducks (no gold) and bluebirds (same data as VLDB17 Duck)",
    "PyLearningCrowds Sentiment (same data as ACT SP)",
    "NIH CXR14 all-findings (reference = majority of 3 of the same 5 readers)",
    "TUPAC16 mitoses (reference = the two raters' own consensus review)",
    "CIFAR-10H (vote counts, no annotator ids), LIDC (no gold), ENHANCE/crowdskin (gold is the "
    "diagnosis, not the annotated feature)",
]


# ============================================================== estimators
def make_ours(method: str, **params: Any) -> Any:
    from crowdmed.aggregation import (
        GLAD,
        DawidSkene,
        MajorityVote,
        OneCoinDawidSkene,
        WeightedMajorityVote,
    )

    cls = {
        "MV": MajorityVote,
        "Wawa": WeightedMajorityVote,
        "DS": DawidSkene,
        "OneCoin": OneCoinDawidSkene,
        "GLAD": GLAD,
    }[method]
    return cls(**params)


def make_crowdkit(method: str, **params: Any) -> Any:
    import crowdkit.aggregation as ck

    cls = {
        "MV": ck.MajorityVote,
        "Wawa": ck.Wawa,
        "DS": ck.DawidSkene,
        "OneCoin": ck.OneCoinDawidSkene,
        "GLAD": ck.GLAD,
    }[method]
    return cls(**params)


def speed_params(lib: str, method: str, n_labels: int) -> dict[str, Any]:
    """Hyperparameters that make both libraries do the same work."""
    if method == "MV":
        return {}
    if method in ("DS", "OneCoin"):  # DS_ITERS E- and M-steps, no early stop
        if lib == "ours":
            return {"max_iter": DS_ITERS, "tol": 0.0, "smoothing": 0.0}
        return {"n_iter": DS_ITERS, "tol": -np.inf}
    n = GLAD_ITERS[n_labels]  # n M-steps, default conjugate-gradient settings
    return {"max_iter": n, "tol": 0.0} if lib == "ours" else {"n_iter": n, "tol": -np.inf}


# ============================================================== child processes
def child_speed(spec: dict[str, Any]) -> dict[str, Any]:
    """One timed fit in a fresh process: ``fit`` seconds, RSS before and peak during it."""
    d = np.load(spec["data"])
    n_items, n_ann, k = (int(v) for v in d["shape"])
    lib, method = spec["lib"], spec["method"]
    t0 = time.perf_counter()
    if lib == "ours":
        from crowdmed.data import CrowdLabels

        data: Any = CrowdLabels.from_triplets(
            d["items"], d["annotators"], d["labels"], n_items=n_items, n_annotators=n_ann,
            n_classes=k,
        )  # fmt: skip
        model = make_ours(method, **spec["params"])
    else:
        data = pd.DataFrame({"task": d["items"], "worker": d["annotators"], "label": d["labels"]})
        model = make_crowdkit(method, **spec["params"])
    build_s = time.perf_counter() - t0
    del d
    gc.collect()
    setup_peak = _status_mb("VmHWM")
    exact = _reset_peak()
    base = _status_mb("VmRSS")
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(data)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    peak = _status_mb("VmHWM")
    if lib == "ours":
        post = model.posteriors_
        n_iter = int(getattr(model, "n_iter_", 0))
    else:
        post = model.probas_.reindex(index=np.arange(n_items), columns=np.arange(k))
        post = post.fillna(0.0).to_numpy()
        n_iter = len(getattr(model, "loss_history_", []))
    if spec.get("posteriors"):
        np.save(spec["posteriors"], post)
    return {
        "fit_s": fit_s,
        "cpu_s": cpu_s,
        "load": load,
        "build_s": build_s,
        "n_iter": n_iter,
        "rss_before_mb": base,
        "peak_fit_mb": peak,
        "peak_setup_mb": setup_peak,
        "peak_exact": exact,
    }


def child_accuracy(spec: dict[str, Any]) -> dict[str, Any]:
    """crowd-kit at its defaults on one real dataset; writes the labels, returns timings."""
    d = np.load(spec["data"])
    df = pd.DataFrame({"task": d["items"], "worker": d["annotators"], "label": d["labels"]})
    n_items = int(d["shape"][0])
    out: dict[str, Any] = {}
    labels = {}
    for method in spec["methods"]:
        model = make_crowdkit(method)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit_predict_proba(df)
        history = list(getattr(model, "loss_history_", []))
        out[method] = {
            "fit_s": time.perf_counter() - t0,
            "n_iter": len(history),
            "last_change": history[-1] - history[-2] if len(history) > 1 else None,
        }
        labels[method] = model.labels_.reindex(np.arange(n_items)).to_numpy(dtype=np.int64)
        np.savez(spec["out"], **labels)  # after every method, in case a later one times out
    return out


def run_child(spec: dict[str, Any], timeout: float | None) -> dict[str, Any] | None:
    """Run ``spec`` in a fresh interpreter; ``None`` on timeout."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    if res.returncode != 0:
        raise RuntimeError(f"child failed ({spec.get('task')}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ============================================================== the three parts
@dataclass
class SpeedRow:
    method: str
    n_labels: int
    k: int
    iters: str
    ours: dict[str, Any]
    theirs: dict[str, Any] | None  # None: timed out
    max_diff: float | None = None


def run_speed(sizes: list[int], ks: list[int], tmp: Path, glad_timeout: float) -> list[SpeedRow]:
    rows = []
    for n_labels in sizes:
        for k in ks:
            data = tmp / f"syn_{n_labels}_{k}.npz"
            np.savez(data, **synthetic(n_labels, k, 1000, seed=1000 * k + n_labels % 997))
            for method in SPEED_METHODS:
                res = {}
                for lib in ("ours", "crowdkit"):
                    spec = {
                        "task": "speed",
                        "data": str(data),
                        "lib": lib,
                        "method": method,
                        "params": speed_params(lib, method, n_labels),
                        "posteriors": str(tmp / f"post_{lib}.npy"),
                    }
                    timeout = glad_timeout if (lib, method) == ("crowdkit", "GLAD") else None
                    log(f"speed {method} {lib} n={n_labels:,} K={k}")
                    res[lib] = run_child(spec, timeout)
                    if res[lib] is None:
                        log(f"  timed out after {glad_timeout:.0f} s")
                    else:
                        log(f"  {res[lib]['fit_s']:.2f} s, iters {res[lib]['n_iter']}")
                diff = None
                if method != "GLAD" and res["crowdkit"] is not None:
                    a, b = np.load(tmp / "post_ours.npy"), np.load(tmp / "post_crowdkit.npy")
                    diff = float(np.abs(a - b).max())
                theirs_it = "—" if res["crowdkit"] is None else res["crowdkit"]["n_iter"]
                iters = "—" if method == "MV" else f"{res['ours']['n_iter']} / {theirs_it}"
                if method == "GLAD":
                    iters = f"{GLAD_ITERS[n_labels]} M-step" + ("s" * (GLAD_ITERS[n_labels] > 1))
                rows.append(
                    SpeedRow(method, n_labels, k, iters, res["ours"], res["crowdkit"], diff)
                )
            data.unlink()
    return rows


def run_scale(tmp: Path) -> dict[str, Any]:
    n_labels, k, n_ann = 10_000_000, 5, 10_000
    log(f"generating {n_labels:,} labels")
    data = tmp / "syn_10M.npz"
    syn = synthetic(n_labels, k, n_ann, seed=10)
    np.savez(data, **syn)
    spec = {
        "task": "speed",
        "data": str(data),
        "lib": "ours",
        "method": "DS",
        "params": {},
        "posteriors": str(tmp / "post_10M.npy"),
    }
    log("DawidSkene on 10M labels")
    res = run_child(spec, None)
    assert res is not None
    post = np.load(tmp / "post_10M.npy")
    res["accuracy"] = float((post.argmax(axis=1) == syn["truth"]).mean())
    res.update(n_labels=n_labels, k=k, n_annotators=n_ann, n_items=n_labels // 10)
    data.unlink()
    log(f"  {res['fit_s']:.1f} s, {res['n_iter']} iterations, peak {res['peak_fit_mb']:.0f} MB")
    return res


@dataclass
class AccRow:
    name: str
    shape: tuple[int, int, int, int]  # items, annotators, K, labels
    note: str
    ours: dict[str, float] = field(default_factory=dict)
    theirs: dict[str, float | None] = field(default_factory=dict)
    ours_s: float = 0.0
    theirs_s: float = 0.0
    theirs_timeout: bool = False
    notes: list[str] = field(default_factory=list)


def explain_shortfall(cl: Any, method: str, info: dict[str, Any], theirs: float) -> str:
    """Re-run crowdmed with crowd-kit's settings (no smoothing, its iteration count)."""
    n = info["n_iter"]
    change = info["last_change"]
    why = (
        f"its objective fell by {-change:.1e} per label"
        if change is not None and change < 0
        else f"its objective rose by < 1e-5 per label ({change:.1e})"
        if change is not None
        else "its first iteration"
    )
    msg = f"crowd-kit stopped after {n} iteration{'s' * (n != 1)} ({why})"
    if method in ("DS", "OneCoin"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lab = make_ours(method, smoothing=0.0, max_iter=n, tol=0.0).fit(cl).labels_
        known = cl.gold >= 0
        acc = float((lab[known] == cl.gold[known]).mean())
        same = "same as crowd-kit" if abs(acc - theirs) < 1e-12 else "crowd-kit has"
        msg += (
            f"; crowdmed with `smoothing=0, max_iter={n}` gives {100 * acc:.2f} ({same}"
            + ("" if same.startswith("same") else f" {100 * theirs:.2f}")
            + ")"
        )
    return msg


def run_accuracy(root: Path, tmp: Path, timeout: float, glad_timeout: float) -> list[AccRow]:
    rows = []
    for ds in DATASETS:
        if not (root / ds.path).exists():
            log(f"skip {ds.name}: {root / ds.path} not found")
            continue
        cl = ds.load(root)
        known = cl.gold >= 0
        row = AccRow(ds.name, (cl.n_items, cl.n_annotators, cl.n_classes, cl.n_labels), ds.note)
        log(f"accuracy {ds.name} {cl}")
        for method in ACC_METHODS:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lab = make_ours(method).fit(cl).labels_
            row.ours_s += time.perf_counter() - t0
            row.ours[method] = float((lab[known] == cl.gold[known]).mean())
        data = tmp / "real.npz"
        np.savez(
            data,
            items=cl.items,
            annotators=cl.annotators,
            labels=cl.labels,
            shape=np.array([cl.n_items, cl.n_annotators, cl.n_classes]),
        )
        out = tmp / "real_labels.npz"
        # GLAD in its own process so that a time-out loses only GLAD.
        for methods in (ACC_METHODS[:-1], ACC_METHODS[-1:]):
            spec = {"task": "accuracy", "data": str(data), "methods": methods, "out": str(out)}
            limit = glad_timeout if methods == ("GLAD",) else timeout
            res = run_child(spec, limit)
            got = np.load(out) if res is not None else {}
            for method in methods:
                if res is None:
                    row.theirs[method] = None
                    row.theirs_s += limit
                    row.theirs_timeout = True
                    log(f"  crowd-kit {method} timed out after {limit:.0f} s")
                    continue
                row.theirs_s += res[method]["fit_s"]
                lab = got[method]
                acc = float((lab[known] == cl.gold[known]).mean())
                row.theirs[method] = acc
                if row.ours[method] < acc - TARGET_ACC:
                    why = explain_shortfall(cl, method, res[method], acc)
                    row.notes.append(f"{ds.name}, {method}: {why}.")
            if out.exists():
                out.unlink()
            if res is not None:
                log("  crowd-kit s: " + ", ".join(f"{m} {res[m]['fit_s']:.1f}" for m in methods))
        shown = {m: "—" if v is None else f"{v:.4f}" for m, v in row.theirs.items()}
        summary = ", ".join(f"{m} {row.ours[m]:.4f}/{shown[m]}" for m in ACC_METHODS)
        log(f"  {summary}  ({row.ours_s:.1f} s / {row.theirs_s:.1f} s)")
        rows.append(row)
    return rows


# ============================================================== report
def _mb(res: dict[str, Any]) -> float:
    return max(res["peak_fit_mb"] - res["rss_before_mb"], 0.0)


def _fmt_mb(x: float) -> str:
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def _fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def run_meta(args: argparse.Namespace, argv: list[str], started: float) -> dict[str, Any]:
    """Where and how the numbers were measured (kept in the JSON, used by the report)."""
    import scipy

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "machine": f"{machine_line()}; scipy {scipy.__version__}, pandas {pd.__version__}, "
        f"crowd-kit {version('crowd-kit')}, crowdmed {version('crowdmed')} ({code_version()})",
        "blas": ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in BLAS_VARS),
        "cores": os.cpu_count(),
        "argv": argv,
        "glad_timeout": args.glad_timeout,
        "accuracy_timeout": args.accuracy_timeout,
        "accuracy_glad_timeout": args.accuracy_glad_timeout,
        "elapsed_min": (time.time() - started) / 60,
        "finished": f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
    }


def render(
    speed: list[SpeedRow], scale: dict[str, Any] | None, acc: list[AccRow], meta: dict[str, Any]
) -> str:
    glad_timeout = meta["glad_timeout"]
    acc_timeout, acc_glad_timeout = meta["accuracy_timeout"], meta["accuracy_glad_timeout"]
    exact = all(r.ours["peak_exact"] for r in speed) if speed else True
    runs = [r.ours for r in speed] + [r.theirs for r in speed if r.theirs is not None]
    loads = [x["load"] for x in runs + ([scale] if scale else [])]
    load_note = (
        f"The machine was shared: the 1-minute load average at the start of the timed fits was "
        f"{min(loads):.1f}–{max(loads):.1f} on {meta['cores']} cores, so wall times are "
        "inflated for both libraries alike; the CPU-time ratio is the steadier comparison."
        if loads
        else ""
    )
    lines = [
        "## Aggregation: crowdmed vs crowd-kit (speed, memory, accuracy)",
        "",
        f"{meta['machine']}. Run took {meta['elapsed_min']:.1f} min, finished "
        f"{meta['finished']}. BLAS threads: {meta['blas']}. {load_note}",
        "",
        "Command: `" + " ".join(["python", "benchmarks/aggregation.py", *meta["argv"]]) + "`",
        "",
        "### Speed and memory (synthetic data)",
        "",
        "1,000 annotators with random confusion matrices (10 % spammers), 10 labels per item "
        "(items = labels / 10), seeded. Each fit runs once in a fresh process; **s** is the wall "
        "time of `fit` alone (data already in memory: `CrowdLabels` for crowdmed, a "
        "`task, worker, label` DataFrame for crowd-kit). **MB** is the peak resident memory "
        "during `fit` above the resident memory just before it "
        + (
            "(Linux `VmHWM`, reset before the fit)"
            if exact
            else "(`VmHWM` could not be reset: includes set-up, an upper bound)"
        )
        + "; RSS, not `tracemalloc`, so that memory of compiled code is counted. "
        f"DS and OneCoin run exactly {DS_ITERS} EM iterations in both libraries (crowdmed "
        "`max_iter=10, tol=0, smoothing=0`; crowd-kit `n_iter=10, tol=-inf`), so they compute "
        "the same posteriors (**max |Δp|** = largest posterior difference). GLAD runs the same "
        "number of M-steps with both libraries' default conjugate-gradient settings (25 "
        "iterations, tolerance 1e-2); at 1M labels crowd-kit's GLAD is run for **one "
        f"iteration only** (time-out {glad_timeout:.0f} s), so the GLAD rows compare the time "
        "per iteration, not a full fit.",
        "",
        "| method | labels | K | iterations (ours / crowd-kit) | ours s | crowd-kit s | ratio "
        "| CPU-time ratio | ours MB | crowd-kit MB | max \\|Δp\\| |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in speed:
        if r.theirs is None:
            ck_s, ck_mb = f"> {glad_timeout:.0f} (time-out)", "—"
            ratio = f"> {glad_timeout / r.ours['fit_s']:.0f}×"
            cpu_ratio = "—"
        else:
            ck_s = _fmt_s(r.theirs["fit_s"])
            ratio = f"{r.theirs['fit_s'] / r.ours['fit_s']:.0f}×"
            cpu_ratio = f"{r.theirs['cpu_s'] / max(r.ours['cpu_s'], 1e-3):.0f}×"
            ck_mb = _fmt_mb(_mb(r.theirs))
        diff = "—" if r.max_diff is None else f"{r.max_diff:.0e}"
        lines.append(
            f"| {r.method} | {r.n_labels:,} | {r.k} | {r.iters} | {_fmt_s(r.ours['fit_s'])} | "
            f"{ck_s} | {ratio} | {cpu_ratio} | {_fmt_mb(_mb(r.ours))} | {ck_mb} | {diff} |"
        )
    short = [
        f"{r.method} {r.n_labels:,} K={r.k} ({r.ours['n_iter']} of {DS_ITERS})"
        for r in speed
        if r.method in ("DS", "OneCoin") and r.ours["n_iter"] < DS_ITERS
    ]
    if short:
        lines += [
            "",
            "crowdmed ran fewer iterations in: " + "; ".join(short) + ". With `tol=0` it still "
            "stops when the log-likelihood gain is ≤ 0, which happens once EM has converged to "
            "floating-point precision (gains of ~1e-10 on a log-likelihood of ~1e6); the "
            "posteriors then agree with crowd-kit's 10 iterations to the max |Δp| shown, and the "
            "time ratio is per fit, not per iteration.",
        ]
    build = [r.ours["build_s"] for r in speed if r.n_labels == max(x.n_labels for x in speed)]
    if build:
        lines += [
            "",
            f"Building the `CrowdLabels` input from the triplets (validation, duplicate check) "
            f"takes {min(build):.2f}–{max(build):.2f} s at {max(x.n_labels for x in speed):,} "
            "labels and is not included above.",
        ]
    lines += ["", "### 10M labels", ""]
    if scale is None:
        lines.append("Skipped (`--quick`).")
    else:
        lines.append(
            f"crowdmed `DawidSkene()` (defaults: `tol=1e-6`, `max_iter=100`), "
            f"{scale['n_labels']:,} labels, {scale['n_items']:,} items, "
            f"{scale['n_annotators']:,} annotators, K = {scale['k']}: **{scale['fit_s']:.1f} s** "
            f"for {scale['n_iter']} iterations, **peak RSS {scale['peak_fit_mb'] / 1024:.2f} GB** "
            f"during `fit` ({_mb(scale):.0f} MB above the {scale['rss_before_mb']:.0f} MB "
            f"resident before it; the process peaked at "
            f"{max(scale['peak_fit_mb'], scale['peak_setup_mb']) / 1024:.2f} GB including "
            f"loading and building the input, {scale['build_s']:.1f} s). Accuracy against the "
            f"simulated truth: {100 * scale['accuracy']:.2f} %. Targets: < 60 s, < 4 GB."
        )
    lines += [
        "",
        "### Accuracy against gold (real datasets, each library at its defaults)",
        "",
        "Cells are **crowdmed / crowd-kit** accuracy in % over the items with a gold label. "
        "Both libraries see the same triplets (repeated `(worker, task)` rows: first kept). "
        "Defaults differ: crowdmed DS/OneCoin use `smoothing=0.01, tol=1e-6` (per label), "
        "GLAD `tol=1e-5`; crowd-kit uses `tol=1e-5` on its own objective, with no smoothing. "
        "⚠ marks crowdmed more than 0.2 points below crowd-kit.",
        "",
        "| dataset | items | annotators | K | labels | "
        + " | ".join(ACC_METHODS)
        + " | s (ours / crowd-kit) |",
        "|---|---:|---:|---:|---:|" + "---|" * len(ACC_METHODS) + "---:|",
    ]
    if not acc:
        lines[-4:] = ["Skipped (`--no-accuracy`, or no data folder)."]
    worse: list[str] = []
    timeouts: list[str] = []
    for r in acc:
        cells = []
        for m in ACC_METHODS:
            o, t = r.ours[m], r.theirs.get(m)
            if t is None:
                cells.append(f"{100 * o:.2f} / time-out")
                timeouts.append(f"{r.name} {m}")
                continue
            flag = " ⚠" if o < t - TARGET_ACC else ""
            if flag:
                worse.append(f"{r.name} {m} ({100 * o:.2f} vs {100 * t:.2f})")
            cells.append(f"{100 * o:.2f} / {100 * t:.2f}{flag}")
        n_it, n_an, k, n_lab = r.shape
        name = r.name + (f" ({r.note})" if r.note else "")
        lines.append(
            f"| {name} | {n_it:,} | {n_an:,} | {k} | {n_lab:,} | "
            + " | ".join(cells)
            + f" | {r.ours_s:.2f} / {'> ' * r.theirs_timeout}{r.theirs_s:.1f} |"
        )
    mean_o = {m: np.mean([r.ours[m] for r in acc]) for m in ACC_METHODS} if acc else {}
    if acc and all(all(r.theirs.get(m) is not None for m in ACC_METHODS) for r in acc):
        mean_t = {m: np.mean([r.theirs[m] for r in acc]) for m in ACC_METHODS}
        lines.append(
            "| **mean** | | | | | "
            + " | ".join(f"{100 * mean_o[m]:.2f} / {100 * mean_t[m]:.2f}" for m in ACC_METHODS)
            + " | |"
        )
    notes = [n for r in acc for n in r.notes]
    if notes:
        lines += [
            "",
            "Where crowdmed is more than 0.2 points below crowd-kit (⚠). crowd-kit 1.4.2 stops "
            "DS and OneCoin when its objective stops rising, but that objective "
            "(`DawidSkene._evidence_lower_bound`) adds the log class prior once per *label* "
            "instead of once per item, so it is not the EM bound and can fall after one or two "
            "iterations (on ZenCrowd_all the bound with the prior once per item rises "
            "-0.506, -0.493, -0.4919, -0.4918 per label while crowd-kit's falls at iteration "
            "3). Each line re-runs crowdmed with crowd-kit's settings:",
            "",
        ]
        lines += [f"- {n}" for n in notes]
    if timeouts:
        lines += [
            "",
            f"crowd-kit timed out (GLAD limit {acc_glad_timeout:.0f} s, others "
            f"{acc_timeout:.0f} s) on: {', '.join(timeouts)}.",
        ]
    lines += ["", "Not included: " + "; ".join(EXCLUDED) + "."]

    # ---------------------------------------------------------------- targets
    lines += ["", "### Targets (from the issue)", ""]

    def target_line(method: str, target: float, what: str) -> str:
        parts, wall = [], []
        for r in speed:
            if r.method != method or r.n_labels != 1_000_000:
                continue
            if r.theirs is None:
                wall.append(glad_timeout / r.ours["fit_s"])
                parts.append(f"K={r.k}: > {wall[-1]:.0f}× (crowd-kit timed out)")
            else:
                wall.append(r.theirs["fit_s"] / r.ours["fit_s"])
                cpu = r.theirs["cpu_s"] / max(r.ours["cpu_s"], 1e-3)
                parts.append(f"K={r.k}: {wall[-1]:.1f}× wall, {cpu:.1f}× CPU")
        if not wall:
            return f"- {what}: not measured (`--quick`)."
        verdict = "met" if min(wall) >= target else "**not met**"
        return f"- {what}: {verdict} ({'; '.join(parts)})."

    lines.append(
        target_line("DS", TARGET_DS, f"DS ≥ {TARGET_DS:.0f}× faster than crowd-kit at 1M labels")
    )
    lines.append(
        target_line(
            "GLAD", TARGET_GLAD, f"GLAD ≥ {TARGET_GLAD:.0f}× faster (per iteration) at 1M labels"
        )
    )
    if scale is not None:
        ok = scale["fit_s"] < 60 and scale["peak_fit_mb"] < 4096
        lines.append(
            f"- DS on 10M labels < 60 s and < 4 GB: {'met' if ok else '**not met**'} "
            f"({scale['fit_s']:.1f} s, {scale['peak_fit_mb'] / 1024:.2f} GB)."
        )
    lines.append(
        "- Accuracy equal or better (within 0.2 points) on every real dataset: "
        + (
            "met."
            if not worse
            else f"**not met** in {len(worse)} of {len(acc) * len(ACC_METHODS)} cases: "
            + "; ".join(worse)
            + "."
        )
    )
    return "\n".join(lines) + "\n"


def code_version() -> str:
    """Commit of the work tree and whether the aggregation sources differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src/crowdmed/aggregation"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "commit unknown"
    if not head:
        return "commit unknown"
    if not dirty:
        return f"commit {head}"
    files = sorted(Path(line[3:]).name for line in dirty.splitlines())
    return f"commit {head} with uncommitted changes to {', '.join(files)}"


# ============================================================== main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark crowdmed's aggregators against crowd-kit (speed, peak memory, accuracy "
            "on real datasets) and write the 'aggregation' section of BENCHMARKS.md at the "
            "repository root."
        )
    )
    parser.add_argument(
        "--quick", action="store_true", help="100k labels only; skip 1M and the 10M-label run"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("CROWDMED_DATA", ROOT.parent / "shared" / "data")),
        help="folder of the real datasets (default: $CROWDMED_DATA or ../shared/data)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="file whose 'aggregation' section to write (default: BENCHMARKS.md at the "
        "repository root; a --quick run only prints its report unless --output is given)",
    )
    parser.add_argument(
        "--glad-timeout",
        type=float,
        default=300.0,
        help="seconds allowed to one crowd-kit GLAD speed run (default: 300)",
    )
    parser.add_argument(
        "--accuracy-timeout",
        type=float,
        default=600.0,
        help="seconds allowed to crowd-kit's MV, Wawa, DS and OneCoin on one real dataset "
        "(default: 600)",
    )
    parser.add_argument(
        "--accuracy-glad-timeout",
        type=float,
        default=240.0,
        help="seconds allowed to crowd-kit's GLAD on one real dataset (default: 240)",
    )
    parser.add_argument("--no-accuracy", action="store_true", help="skip the real datasets")
    parser.add_argument(
        "--from-json",
        type=Path,
        help=f"re-render the report from the raw results of an earlier run (e.g. {RESULTS})",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    # On SIGTERM, unwind: subprocess.run kills the running child, the temp folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.child:
        spec = json.loads(args.child)
        fn = child_speed if spec["task"] == "speed" else child_accuracy
        print(json.dumps(fn(spec)))
        return 0

    argv_shown = sys.argv[1:] if argv is None else argv
    if args.from_json:
        raw = json.loads(args.from_json.read_text(encoding="utf-8"))
        speed = [SpeedRow(**r) for r in raw["speed"]]
        acc = [AccRow(**{**r, "shape": tuple(r["shape"])}) for r in raw["accuracy"]]
        text = render(speed, raw["scale"], acc, raw["meta"])
        target = update_section("aggregation", text, args.output or "BENCHMARKS.md")
        log(f"re-rendered {args.from_json} into the 'aggregation' section of {target}")
        return 0

    started = time.time()
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    with tempfile.TemporaryDirectory(prefix="crowdmed-aggbench-") as tmp_name:
        tmp = Path(tmp_name)
        speed = run_speed(sizes, [2, 10], tmp, args.glad_timeout)
        scale = None if args.quick else run_scale(tmp)
        acc: list[AccRow] = []
        if not args.no_accuracy:
            if args.data.is_dir():
                acc = run_accuracy(
                    args.data, tmp, args.accuracy_timeout, args.accuracy_glad_timeout
                )
            else:
                log(f"no real datasets at {args.data}; set CROWDMED_DATA or --data")
    meta = run_meta(args, argv_shown, started)
    text = render(speed, scale, acc, meta)
    if args.output is None and args.quick:
        print(text)
        log("quick run: BENCHMARKS.md not updated (pass --output to write a file)")
        return 0
    target = update_section("aggregation", text, args.output or "BENCHMARKS.md")
    log(f"wrote the 'aggregation' section of {target}")
    if args.output is None:
        raw = {
            "meta": meta,
            "speed": [r.__dict__ for r in speed],
            "scale": scale,
            "accuracy": [r.__dict__ for r in acc],
        }
        path = write_json(RESULTS, raw)
        log(f"raw results: {path} (re-render with --from-json {RESULTS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
