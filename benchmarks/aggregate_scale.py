"""``crowdmed aggregate`` end to end against crowd-kit, and Dawid–Skene on Dask past one machine.

Two parts, each writing its half of the ``aggregate_scale`` section of BENCHMARKS.md:

* **cli**: ``crowdmed aggregate labels.csv -m dawid-skene -o consensus.csv`` on 1M labels
  (K = 10, string ids) as a fresh process, against crowd-kit's equivalent script (read the
  CSV with pandas, ``DawidSkene().fit_predict``, write labels and posteriors in one CSV) in
  the same run. Both at their defaults; each is run ``--repeats`` times and the median wall
  time (process start to exit) is reported, with a breakdown (import, read, fit, write)
  measured inside the same processes.
* **dask**: Dawid–Skene on ``--dask-labels`` labels (default 100M) read from partitioned
  Parquet by a ``LocalCluster`` (``--workers`` processes of one thread, ``--memory-limit``
  each), next to the in-memory fit of 10M labels from the same kind of files. Peak resident
  memory of every worker is read from the workers themselves.

Usage::

    python benchmarks/aggregate_scale.py                    # both parts
    python benchmarks/aggregate_scale.py --part cli
    python benchmarks/aggregate_scale.py --part dask --dask-labels 100000000
"""

from __future__ import annotations

import os

BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Thread settings the caller gave; the cli part runs both commands with only these (the
#: libraries' defaults otherwise), the Dask part with one thread per worker.
CALLER_THREADS = {v: os.environ[v] for v in BLAS_VARS if v in os.environ}
for _var in BLAS_VARS:
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from _report import machine_line, update_section, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "benchmarks/results/aggregate_scale.json"
SECTION = "aggregate_scale"
CLI_LABELS, CLI_K, CLI_ANNOTATORS = 1_000_000, 10, 1_000
DASK_K, DASK_ANNOTATORS, PER_ITEM = 5, 10_000, 10
PARTITION_LABELS = 2_000_000
TARGET_CLI = 10.0


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def load() -> float:
    return os.getloadavg()[0]


# ============================================================== synthetic labels
def confusions(k: int, n_annotators: int, rng: np.random.Generator) -> np.ndarray:
    """Cumulative confusion rows ``[a, k, :]``: Dirichlet(1 + s_a K e_k), 10 % spammers.

    The annotator model of ``benchmarks/aggregation.py`` (``synthetic``).
    """
    strength = rng.uniform(0.3, 4.0, n_annotators)
    conf = rng.gamma(1.0 + strength[:, None, None] * k * np.eye(k))
    conf /= conf.sum(axis=2, keepdims=True)
    spam = rng.random(n_annotators) < 0.1
    conf[spam] = rng.dirichlet(np.ones(k), size=int(spam.sum()))[:, None, :]
    return np.cumsum(conf, axis=2)


def draw_labels(
    first_item: int, n_items: int, cum: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``PER_ITEM`` distinct annotators per item, labels drawn from their confusion rows."""
    n_ann, k, _ = cum.shape
    truth = rng.integers(0, k, n_items)
    ann = rng.integers(0, n_ann, size=(n_items, PER_ITEM))
    while True:  # distinct annotators per item
        srt = np.sort(ann, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
        if not dup.any():
            break
        ann[dup] = rng.integers(0, n_ann, size=(int(dup.sum()), PER_ITEM))
    items = np.repeat(np.arange(first_item, first_item + n_items, dtype=np.int64), PER_ITEM)
    annotators = ann.ravel()
    rows = cum[annotators, np.repeat(truth, PER_ITEM)]
    labels = np.minimum((rng.random(len(rows))[:, None] > rows).sum(axis=1), k - 1)
    return {
        "item": items,
        "annotator": annotators.astype(np.int32),
        "label": labels.astype(np.int8),
        "truth": truth,
    }


def write_cli_csv(path: Path, seed: int = 0) -> None:
    """1M labels, K = 10, 1,000 annotators, ids as text (``img123``, ``r45``)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cum = confusions(CLI_K, CLI_ANNOTATORS, rng)
    d = draw_labels(0, CLI_LABELS // PER_ITEM, cum, rng)
    df = pd.DataFrame(
        {
            "item": np.char.add("img", d["item"].astype(str)),
            "annotator": np.char.add("r", d["annotator"].astype(str)),
            "label": d["label"],
        }
    )
    df.to_csv(path, index=False)


def write_parquet(folder: Path, n_labels: int, seed: int = 0) -> np.ndarray:
    """``n_labels`` labels as Parquet files of ``PARTITION_LABELS`` rows, partitioned by item.

    Returns the true classes of the items (for the accuracy figure).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cum = confusions(DASK_K, DASK_ANNOTATORS, rng)
    per_part = PARTITION_LABELS // PER_ITEM
    n_items = n_labels // PER_ITEM
    truths = []
    for p, first in enumerate(range(0, n_items, per_part)):
        d = draw_labels(
            first, min(per_part, n_items - first), cum, np.random.default_rng([seed, p])
        )
        truths.append(d.pop("truth"))
        pq.write_table(pa.table(d), folder / f"part.{p:04d}.parquet")
    return np.concatenate(truths)


# ============================================================== part 1: the command line
CROWDKIT_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
from crowdkit.aggregation import DawidSkene
t1 = time.perf_counter()
df = pd.read_csv(sys.argv[1]).rename(columns={"item": "task", "annotator": "worker"})
t2 = time.perf_counter()
model = DawidSkene()
labels = model.fit_predict(df)
t3 = time.perf_counter()
out = model.probas_.add_prefix("p_")
out.insert(0, "label", labels)
out.index.name = "item"
out.to_csv(sys.argv[2])
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "read": t2 - t1, "fit": t3 - t2, "write": t4 - t3,
                  "n_iter": len(model.loss_history_)}))
"""

CROWDMED_BREAKDOWN = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy, pyarrow  # the floor: arrays, and the CSV reader and writer
t_np_pd = time.perf_counter()
import crowdmed.cli.root  # what `crowdmed aggregate` imports: the root, its command
import crowdmed.cli.aggregate
import crowdmed.pipelines.aggregate as pipe
from crowdmed.aggregation.base import BaseAggregator
t1 = time.perf_counter()
# The real command in this process, with its three steps timed from the inside.
marks = {}
def timed(name, fn):
    def wrapper(*args, **kwargs):
        marks[name + "0"] = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            marks[name + "1"] = time.perf_counter()
    return wrapper
pipe.read_label_file = timed("read", pipe.read_label_file)
pipe.write_consensus = timed("write", pipe.write_consensus)
BaseAggregator.fit = timed("fit", BaseAggregator.fit)
out = sys.argv[2]
sys.argv = ["crowdmed", "aggregate", sys.argv[1], "-m", "dawid-skene", "-o", out]
try:
    crowdmed.cli.root.main()  # as the console script runs it
except SystemExit as exc:
    assert not exc.code, exc.code
t_end = time.perf_counter()
m = marks
print(json.dumps({
    "import": t1 - t0, "read": m["read1"] - m["read0"], "fit": m["fit1"] - m["fit0"],
    "write": m["write1"] - m["write0"], "import_numpy_pyarrow": t_np_pd - t0,
    "options": m["read0"] - t1,
    "other": (m["fit0"] - m["read1"]) + (m["write0"] - m["fit1"]) + (t_end - m["write1"]),
    "n_iter": json.load(open(out + ".json"))["fit"]["n_iter"],
}))
"""


def cli_env() -> dict[str, str]:
    """The environment of the cli part: the caller's thread settings, nothing forced."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
    return env | CALLER_THREADS


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({res.returncode}): {res.stderr[-2000:]}")
    return wall, res.stdout


def run_cli(tmp: Path, repeats: int) -> dict[str, Any]:
    import pandas as pd

    csv = tmp / "labels.csv"
    log(f"writing {CLI_LABELS:,} labels to {csv}")
    write_cli_csv(csv)
    crowdmed_bin = str(Path(sys.executable).with_name("crowdmed"))
    ours_cmd = [
        crowdmed_bin,
        "aggregate",
        str(csv),
        "-m",
        "dawid-skene",
        "-o",
        str(tmp / "ours.csv"),
    ]
    theirs_cmd = [sys.executable, "-c", CROWDKIT_SCRIPT, str(csv), str(tmp / "theirs.csv")]
    breakdown_cmd = [sys.executable, "-c", CROWDMED_BREAKDOWN, str(csv), str(tmp / "ours2.csv")]
    startup = min(timed([sys.executable, "-c", "pass"], cli_env())[0] for _ in range(3))
    ours, theirs, ours_parts, theirs_parts, loads = [], [], [], [], []
    for r in range(repeats):
        loads.append(load())
        wall, _ = timed(ours_cmd, cli_env())
        ours.append(wall)
        log(f"  crowdmed aggregate run {r + 1}: {wall:.2f} s")
        wall, out = timed(breakdown_cmd, cli_env())
        ours_parts.append(json.loads(out))
        wall, out = timed(theirs_cmd, cli_env())
        theirs.append(wall)
        theirs_parts.append(json.loads(out))
        log(f"  crowd-kit script run {r + 1}: {wall:.2f} s")
    a = pd.read_csv(tmp / "ours.csv", dtype={"item": str})
    b = pd.read_csv(tmp / "theirs.csv", dtype={"item": str}).set_index("item")
    agree = float((b.loc[a["item"], "label"].to_numpy() == a["label"].to_numpy()).mean())

    def median_parts(parts: list[dict[str, float]]) -> dict[str, float]:
        return {key: statistics.median(p[key] for p in parts) for key in parts[0]}

    return {
        "n_labels": CLI_LABELS,
        "k": CLI_K,
        "n_annotators": CLI_ANNOTATORS,
        "n_items": CLI_LABELS // PER_ITEM,
        "repeats": repeats,
        "threads": ", ".join(f"{k}={v}" for k, v in CALLER_THREADS.items()) or "library defaults",
        "python_startup_s": startup,
        "ours_s": ours,
        "theirs_s": theirs,
        "ours_parts": median_parts(ours_parts),
        "theirs_parts": median_parts(theirs_parts),
        "label_agreement": agree,
        "loads": loads,
        "csv_mb": csv.stat().st_size / 1e6,
        "out_mb": (tmp / "ours.csv").stat().st_size / 1e6,
    }


# ============================================================== part 2: Dask
DASK_CHILD = r"""
import json, os, resource, sys, time, warnings
# The encoded partitions stay in memory: no spilling to disk (the workers and their children
# read these settings from the environment).
os.environ["DASK_DISTRIBUTED__WORKER__MEMORY__TARGET"] = "False"
os.environ["DASK_DISTRIBUTED__WORKER__MEMORY__SPILL"] = "False"
import numpy as np
spec = json.loads(sys.argv[1])
from dask.distributed import Client, LocalCluster
from crowdmed.aggregation import DawidSkene
from crowdmed.aggregation.distributed import DaskAggregator

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

with LocalCluster(n_workers=spec["workers"], threads_per_worker=1, processes=True,
                  memory_limit=spec["memory_limit"], dashboard_address=None) as cluster, \
        Client(cluster) as client:
    t0 = time.perf_counter()
    agg = DaskAggregator(DawidSkene(), persist=spec["persist"])
    times = []
    agg.fit(spec["path"], callback=lambda i, ll: times.append(time.perf_counter()))
    t1 = time.perf_counter()
    out = agg.consensus_[["item", "label"]].compute()
    t2 = time.perf_counter()
    truth = np.load(spec["truth"])
    acc = float((truth[out["item"].to_numpy()] == out["label"].to_numpy()).mean())
    workers = client.run(peak_mb)
print(json.dumps({
    "fit_s": t1 - t0, "consensus_s": t2 - t1, "first_pass_s": times[0] - t0 if times else None,
    "iteration_s": float(np.diff(times).mean()) if len(times) > 1 else None,
    "n_iter": agg.n_iter_, "converged": agg.converged_, "accuracy": acc,
    "n_partitions": agg.n_partitions_, "n_items": agg.n_items_, "n_labels": agg.n_labels_,
    "worker_peak_mb": sorted(workers.values()), "driver_peak_mb": peak_mb(),
}))
"""

MEMORY_CHILD = r"""
import json, resource, sys, time, glob
import numpy as np, pandas as pd
spec = json.loads(sys.argv[1])
from crowdmed.aggregation import DawidSkene
from crowdmed.data import CrowdLabels
t0 = time.perf_counter()
df = pd.read_parquet(spec["path"])
cl = CrowdLabels.from_triplets(df["item"].to_numpy(), df["annotator"].to_numpy(),
                               df["label"].to_numpy())
del df
t1 = time.perf_counter()
agg = DawidSkene().fit(cl)
t2 = time.perf_counter()
truth = np.load(spec["truth"])
print(json.dumps({"read_s": t1 - t0, "fit_s": t2 - t1, "n_iter": agg.n_iter_,
                  "accuracy": float((agg.labels_ == truth[cl.item_ids]).mean()),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_dask(
    tmp: Path, n_labels: int, workers: int, memory_limit: str, persist: bool
) -> dict[str, Any]:
    small = 10_000_000
    res: dict[str, Any] = {
        "k": DASK_K,
        "n_annotators": DASK_ANNOTATORS,
        "partition_labels": PARTITION_LABELS,
        "workers": workers,
        "memory_limit": memory_limit,
        "persist": persist,
    }
    for n, key in ((small, "small"), (n_labels, "large")):
        folder = tmp / f"labels_{n}"
        if not folder.exists():
            log(f"writing {n:,} labels to {folder}")
            t0 = time.perf_counter()
            truth = write_parquet(folder, n)
            np.save(tmp / f"truth_{n}.npy", truth)
            log(f"  {time.perf_counter() - t0:.0f} s, {_du(folder):.0f} MB")
        res[f"{key}_parquet_mb"] = _du(folder)
        spec = {
            "path": str(folder),
            "truth": str(tmp / f"truth_{n}.npy"),
            "workers": workers,
            "memory_limit": memory_limit,
            "persist": persist,
        }
        if key == "small":
            res["in_memory"] = _child(MEMORY_CHILD, spec, load())
            log(f"  in memory, {n:,} labels: {res['in_memory']}")
        res[f"dask_{key}"] = _child(DASK_CHILD, spec, load())
        res[f"dask_{key}"]["n_labels_requested"] = n
        log(f"  dask, {n:,} labels: {res[f'dask_{key}']}")
        if n == small and n_labels == small:
            break
    return res


def _child(code: str, spec: dict[str, Any], load_at_start: float) -> dict[str, Any]:
    wall, out = timed([sys.executable, "-c", code, json.dumps(spec)])
    return {**json.loads(out.strip().splitlines()[-1]), "wall_s": wall, "load": load_at_start}


def _du(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


# ============================================================== report
def render(cli: dict[str, Any] | None, dsk: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    lines = [
        "## `crowdmed aggregate` end to end, and Dawid–Skene on Dask",
        "",
        f"{meta['machine']}. The last part run took {meta['elapsed_min']:.1f} min, finished "
        f"{meta['finished']}. BLAS threads of the Dask part: {meta['blas']}.",
        "",
        "Commands: " + _commands(meta),
        "",
    ]
    if cli:
        ours, theirs = statistics.median(cli["ours_s"]), statistics.median(cli["theirs_s"])
        po, pt = cli["ours_parts"], cli["theirs_parts"]
        lines += [
            "### The command line against crowd-kit's script (1M labels, K = 10)",
            "",
            f"{cli['n_labels']:,} labels, {cli['n_items']:,} items, {cli['n_annotators']:,} "
            f"annotators, K = {cli['k']}, ids as text ({cli['csv_mb']:.0f} MB CSV). crowdmed: "
            "`crowdmed aggregate labels.csv -m dawid-skene -o consensus.csv` (writes the "
            "consensus table item, label, confidence, p_0..p_9 and the run record). crowd-kit "
            "1.4.2: a script that reads the CSV with pandas, runs `DawidSkene().fit_predict` "
            "and writes labels and posteriors in one CSV. Both at their defaults "
            f"(crowdmed stopped after {po['n_iter']:.0f} iterations, crowd-kit after "
            f"{pt['n_iter']:.0f}); their consensus labels agree on "
            f"{100 * cli['label_agreement']:.2f} % of the items. Each command ran "
            f"{cli['repeats']} times as a fresh process, alternating, with "
            + (
                "every library's default threads (no BLAS or OpenMP thread variable set; "
                "pyarrow's reader and crowdmed's writer use the cores pyarrow counts)"
                if cli.get("threads", "library defaults") == "library defaults"
                else f"{cli['threads']}"
            )
            + "; **wall** is the median "
            "from process start to exit (Python itself starts in "
            f"{cli['python_startup_s']:.2f} s). The breakdown is the median of the same steps "
            "timed inside a second process of each (crowdmed: the command run by `main()` in "
            "a process that times its steps; import = the modules it loads before parsing the "
            "options; SciPy's sparse matrices, which every aggregator's EM products use, are "
            "imported by a background thread while pyarrow parses the file, so their import "
            "shows in whichever step it overlaps).",
            "",
            "| | wall s | import s | read s | fit s | write s |",
            "|---|---:|---:|---:|---:|---:|",
            f"| crowdmed aggregate | {ours:.2f} | {po['import']:.2f} | {po['read']:.2f} | "
            f"{po['fit'] + po.get('import_scipy_sparse', 0.0):.2f} | {po['write']:.2f} |",
            f"| crowd-kit script | {theirs:.2f} | {pt['import']:.2f} | {pt['read']:.2f} | "
            f"{pt['fit']:.2f} | {pt['write']:.2f} |",
            f"| ratio | **{theirs / ours:.1f}×** | {pt['import'] / po['import']:.1f}× | "
            f"{pt['read'] / po['read']:.1f}× | "
            f"{pt['fit'] / (po['fit'] + po.get('import_scipy_sparse', 0.0)):.1f}× | "
            f"{pt['write'] / po['write']:.1f}× |",
            "",
            "All runs: crowdmed "
            + ", ".join(f"{x:.2f}" for x in cli["ours_s"])
            + " s; crowd-kit "
            + ", ".join(f"{x:.2f}" for x in cli["theirs_s"])
            + " s. 1-minute load average at the start of each pair: "
            + ", ".join(f"{x:.1f}" for x in cli["loads"])
            + f" on {meta['cores']} cores (shared machine).",
            "",
            f"Target ≥ {TARGET_CLI:.0f}× end to end: "
            + ("met." if theirs / ours >= TARGET_CLI else f"**not met** ({theirs / ours:.1f}×)."),
            "",
        ]
        where = []
        if "options" in po:  # the breakdown of the command itself (older runs: the steps only)
            parts = {
                "Python start-up": cli["python_startup_s"],
                "importing NumPy and pyarrow": po["import_numpy_pyarrow"],
                "importing the command line and crowdmed's modules": po["import"]
                - po["import_numpy_pyarrow"],
                "typer's parsing of the options (a pydantic validator per option) and their "
                "checks": po["options"],
                "reading": po["read"],
                "the fit": po["fit"],
                "writing": po["write"],
                "the consensus table, run record and summary": po["other"],
            }
            inside = sum(parts.values())
            where += [
                "Where crowdmed's time goes, timed inside the command itself (the breakdown "
                f"process runs it; {inside:.2f} s there): "
                + "; ".join(f"{k} {v:.2f} s ({100 * v / inside:.0f} %)" for k, v in parts.items())
                + ". Commands load lazily (only the root and the aggregate command are "
                "imported), and pandas is not imported on a plain long CSV. Reading is "
                "pyarrow's CSV parser, which dictionary-encodes the id and label columns on its "
                "threads, with each distinct id and label turned into one Python string, then "
                "the encoding checks; writing is pyarrow's CSV writer on blocks of rows formatted "
                "in parallel threads, most of it formatting "
                f"{cli['n_items'] * (cli['k'] + 1):,} floats with round-trip digits."
            ]
            if theirs / ours < TARGET_CLI:
                floor = (
                    cli["python_startup_s"] + po["import_numpy_pyarrow"] + po["fit"] + po["write"]
                )
                where += [
                    f" At {TARGET_CLI:.0f}× the command would have {theirs / TARGET_CLI:.2f} s; "
                    "Python with NumPy and pyarrow, the fit and the write alone take "
                    f"{floor:.2f} s here."
                ]
        lines += ["".join(where), ""]
    if dsk:
        mem, small = dsk["in_memory"], dsk["dask_small"]
        large = dsk.get("dask_large")
        lines += [
            "### Dawid–Skene past one machine (Dask)",
            "",
            f"Synthetic labels (K = {dsk['k']}, {dsk['n_annotators']:,} annotators with random "
            "confusion matrices, 10 % spammers, 10 labels per item) written as Parquet files "
            f"of {dsk['partition_labels']:,} labels, partitioned by item. `DaskAggregator("
            "DawidSkene())` (defaults: `tol=1e-6`, `max_iter=100`) on a `LocalCluster` of "
            f"{dsk['workers']} worker processes with one thread each and `memory_limit="
            f"{dsk['memory_limit']}` per worker (spilling to disk off); the encoded partitions "
            "are "
            + (
                "kept in the workers' memory (`persist=True`)"
                if dsk["persist"]
                else "re-read on every pass (`persist=False`)"
            )
            + ". **fit s** covers the whole fit from the Parquet folder (one read of the data, "
            "encoding, EM); **to iteration 1 s** runs from the start of the fit to the end of "
            "the first EM iteration (reading, encoding, the starting posteriors and one "
            "iteration); **s / iteration** is the mean of the later ones. **peak memory** of a "
            "worker is its peak resident memory, read from the worker.",
            "",
            "| run | labels | partitions | iterations | fit s | to iteration 1 s | s / iteration "
            "| accuracy | peak memory |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| in memory (`DawidSkene().fit`) | {small['n_labels']:,} | — | {mem['n_iter']} | "
            f"{mem['fit_s']:.1f} | — | — | {100 * mem['accuracy']:.2f} % | "
            f"{mem['peak_mb'] / 1024:.2f} GB (process; reading {mem['read_s']:.1f} s not in fit) |",
        ]
        for row in [small] + ([large] if large else []):
            peaks = " / ".join(f"{x / 1024:.2f}" for x in row["worker_peak_mb"])
            lines.append(
                f"| Dask, {dsk['workers']} workers | {row['n_labels']:,} | {row['n_partitions']} "
                f"| {row['n_iter']} | {row['fit_s']:.1f} | {row['first_pass_s']:.1f} | "
                f"{row['iteration_s']:.2f} | {100 * row['accuracy']:.2f} % | workers {peaks} GB, "
                f"driver {row['driver_peak_mb'] / 1024:.2f} GB |"
            )
        lines += [""]
        if large is None or large["n_labels"] < 100_000_000:
            lines += [
                "100M labels were not run here (see the note below); the command is "
                "`python benchmarks/aggregate_scale.py --part dask --dask-labels 100000000`.",
                "",
            ]
        lines += [
            "Loads at the start of each run: "
            + ", ".join(f"{x['load']:.1f}" for x in [mem, small] + ([large] if large else []))
            + ".",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _commands(meta: dict[str, Any]) -> str:
    runs = meta.get("part_commands") or {"": " ".join(meta["argv"])}
    return (
        "; ".join(
            f"`python benchmarks/aggregate_scale.py {c}`".replace(" `", "`")
            for c in runs.values()
            if c is not None
        )
        + "."
    )


def _shown(argv: list[str]) -> str:
    """The arguments without ``--tmp FOLDER`` (a scratch folder)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--tmp":
            skip = True
        elif not a.startswith("--tmp="):
            out.append(a)
    return " ".join(out)


def code_version() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "commit unknown"
    return f"commit {head}" if head else "commit unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("cli", "dask", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (cli)")
    parser.add_argument("--dask-labels", type=int, default=100_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GB", help="per Dask worker")
    parser.add_argument("--no-persist", action="store_true", help="re-read partitions per pass")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the data files")
    parser.add_argument("--from-json", type=Path, help=f"re-render from {RESULTS}")
    args = parser.parse_args(argv)
    argv_shown = sys.argv[1:] if argv is None else argv

    if args.from_json:
        raw = json.loads(args.from_json.read_text(encoding="utf-8"))
        update_section(SECTION, render(raw.get("cli"), raw.get("dask"), raw["meta"]))
        return 0
    started = time.time()
    old = json.loads((ROOT / RESULTS).read_text()) if (ROOT / RESULTS).exists() else {}
    tmp = args.tmp or Path(tempfile.mkdtemp(prefix="crowdmed-scale-"))
    try:
        cli = run_cli(tmp, args.repeats) if args.part in ("cli", "all") else old.get("cli")
        dsk = (
            run_dask(tmp, args.dask_labels, args.workers, args.memory_limit, not args.no_persist)
            if args.part in ("dask", "all")
            else old.get("dask")
        )
    finally:
        if args.tmp is None:
            shutil.rmtree(tmp, ignore_errors=True)
    import pandas as pd

    old_commands = old.get("meta", {}).get("part_commands", {})
    part_commands = {
        part: _shown(argv_shown) if args.part in (part, "all") else old_commands.get(part)
        for part in ("cli", "dask")
    }
    meta = {
        "part_commands": part_commands,
        "machine": f"{machine_line()}; pandas {pd.__version__}, pyarrow {version('pyarrow')}, "
        f"dask {version('dask')}, crowd-kit {version('crowd-kit')}, crowdmed "
        f"{version('crowdmed')} ({code_version()})",
        "blas": ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in BLAS_VARS),
        "cores": os.cpu_count(),
        "argv": argv_shown,
        "elapsed_min": (time.time() - started) / 60,
        "finished": f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    raw = {"meta": meta, "cli": cli, "dask": dsk}
    write_json(RESULTS, raw)
    target = update_section(SECTION, render(cli, dsk, meta))
    log(f"wrote the '{SECTION}' section of {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
