"""Crowd-layer overhead per training epoch, on an MLP head and on a CNN, in one run.

Two networks, each trained by :class:`crowdmed.training.CrowdClassifier` with plain softmax
training on majority-vote labels (``dl-mv``) and with the crowd layer (``crowd-layer-mw``,
``crowd-layer-vw+b``), same data, same seed, a fixed number of epochs and no validation pass:

- **MLP head**: ``mlp_head(512, 8)`` on the LabelMe-AMT features (1,000 images, 59 MTurk
  workers, 1-3 answers per image), batch 64 — the setting of the ``crowd_learning`` benchmark;
- **CNN**: ``small_cnn(1, 4, width 8)`` on 512 synthetic 64×64 images (four classes of
  blurred shapes), 59 simulated annotators with 1-3 labels per image, batch 64.

A diagnostic run on the MLP head, plain training with one more (59, K, K) parameter that
enters the loss through three tiny operations, measures the floor of any crowd layer there.

Repetitions are interleaved in a random order so load on the shared machine hits all methods
alike; the first epoch of every fit (allocation warm-up) is dropped. The ratio of a repetition
is the method's median thread-CPU seconds per epoch over the plain run's of the same
repetition; the table gives the median ratio with its range, and the paired 95 % t interval of
the per-repetition difference in CPU ms per epoch. cProfile splits one MLP epoch by function.

Usage::

    python benchmarks/crowd_layer_overhead.py [--reps 7] [--epochs 12] [--cnn-epochs 4]

Writes the ``crowd_layer_overhead`` section of ``BENCHMARKS.md`` and
``benchmarks/results/crowd_layer_overhead.json``; ``--quick`` only prints.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, update_section, write_json

METHODS = {"plain (DL-MV)": "dl-mv", "CL-MW": "crowd-layer-mw", "CL-VW+B": "crowd-layer-vw+b"}
# A diagnostic run, not a method: plain training with one more (59, K, K) parameter that enters
# the loss through three tiny operations (0 · Σw added to the logits). Its cost is the floor of
# any crowd layer in eager PyTorch: one more parameter for Adam and a few more graph nodes.
FLOOR = "plain + idle 59×K×K parameter"
BUDGET = 1.10
JSON = "benchmarks/results/crowd_layer_overhead.json"


class EpochClock:
    """Progress hook: thread CPU seconds between consecutive epoch callbacks."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self._last = time.thread_time()

    def __call__(self, epoch: int, epochs: int, record: dict[str, float]) -> None:
        now = time.thread_time()
        self.cpu.append(now - self._last)
        self._last = now


def labelme() -> dict[str, Any]:
    import crowd_learning

    d = crowd_learning.load_labelme()
    return {"X": d["X_train"].astype(np.float32), "answers": d["answers"], "k": 8}


def synthetic_images(n: int = 512, size: int = 64, seed: int = 0) -> dict[str, Any]:
    """Four classes of blurred shapes plus noise; 59 annotators, 1-3 labels per image."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    yy, xx = np.mgrid[:size, :size] - size / 2
    shapes = [
        (yy**2 + xx**2) < 12**2,  # disc
        (np.abs(yy) < 10) & (np.abs(xx) < 10),  # square
        np.abs(yy) < 4,  # horizontal bar
        np.abs(xx) < 4,  # vertical bar
    ]
    X = np.empty((n, 1, size, size), np.float32)
    for i in range(n):
        img = ndimage.shift(shapes[y[i]].astype(float), rng.normal(0, 4, 2), order=1)
        X[i, 0] = ndimage.gaussian_filter(img, 1.5) + rng.normal(0, 0.3, (size, size))
    a = 59
    acc = rng.uniform(0.55, 0.95, a)
    answers = np.full((n, a), -1, np.int64)
    for i in range(n):
        who = rng.choice(a, rng.integers(1, 4), replace=False)
        for j in who:
            answers[i, j] = y[i] if rng.random() < acc[j] else rng.integers(0, 4)
    return {"X": X, "answers": answers, "k": 4}


def network(kind: str, k: int, seed: int):
    import torch

    from crowdmed.nn import mlp_head, small_cnn

    torch.manual_seed(seed)
    return mlp_head(512, k) if kind == "MLP head" else small_cnn(1, k, width=8, depth=4)


def with_idle_parameter(net, k: int):
    """``net`` plus a (59, k, k) parameter added to its logits as ``0 · Σw`` (see FLOOR)."""
    import torch
    from torch import nn

    class IdleParameter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.extra = nn.Parameter(torch.zeros(59, k, k))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x) + 0.0 * self.extra.sum()

    return IdleParameter()


def fit(kind: str, data: dict[str, Any], method: str, epochs: int, progress: Any = False):
    from crowdmed.training.classifier import CrowdClassifier

    net = network(kind, data["k"], 0)
    if method == FLOOR:
        net, method = with_idle_parameter(net, data["k"]), "dl-mv"
    clf = CrowdClassifier(
        net,
        method=method,
        epochs=epochs,
        batch_size=64,
        lr=1e-3,
        patience=None,
        progress=progress,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(data["X"], data["answers"], n_classes=data["k"])
    return clf


def measure(datasets: dict[str, dict], epochs: dict[str, int], reps: int, log) -> dict:
    from crowdmed.metrics.stats import paired_difference

    runs = [(kind, name) for kind in datasets for name in METHODS]
    runs.append(("MLP head", FLOOR))
    raw: dict[str, list[float]] = {f"{k}|{m}": [] for k, m in runs}
    rng = np.random.default_rng(0)
    for kind in datasets:  # warm-up: first-call allocations and imports
        fit(kind, datasets[kind], "crowd-layer-mw", 2)
    for rep in range(reps):
        for j in rng.permutation(len(runs)):
            kind, name = runs[j]
            clock = EpochClock()
            fit(kind, datasets[kind], METHODS.get(name, name), epochs[kind], progress=clock)
            raw[f"{kind}|{name}"].append(float(np.median(clock.cpu[1:])))
        log(f"  repetition {rep + 1}/{reps} done")
    summary = {}
    for kind, name in runs:
        mine = np.array(raw[f"{kind}|{name}"])
        base = np.array(raw[f"{kind}|plain (DL-MV)"])
        ratios = mine / base
        diff = paired_difference(1000 * mine, 1000 * base, higher_is_better=False)
        summary[f"{kind}|{name}"] = {
            "kind": kind,
            "method": name,
            "cpu_s_per_epoch": float(np.median(mine)),
            "ratio_median": float(np.median(ratios)),
            "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()),
            "extra_ms": diff.as_dict(),
        }
    return {"raw": raw, "summary": summary}


PROFILE_KEYS = [
    ("network forward", "container.py", "forward"),
    ("loss (incl. crowd layer)", "classifier.py", "_loss"),
    ("  CrowdLayer.observed_nll", "layers.py", "observed_nll"),
    ("backward", "_tensor.py", "backward"),
    ("optimizer.zero_grad", "optimizer.py", "zero_grad"),
    ("Adam.step", "adam.py", "step"),
    ("whole epoch", "engine.py", "_train_epoch"),
]


def profile(data: dict[str, Any], epochs: int) -> dict[str, dict[str, float]]:
    import cProfile
    import pstats

    out = {}
    for name, method in METHODS.items():
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        fit("MLP head", data, method, epochs)
        prof.disable()
        stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
        row = {}
        for label, suffix, func in PROFILE_KEYS:
            total = 0.0
            for (filename, _line, fname), (_cc, _nc, _tt, ct, _callers) in stats.items():
                if func.startswith("<built-in"):
                    total += ct if filename == "~" and fname.startswith(func) else 0.0
                elif filename.endswith(suffix) and fname == func:
                    total += ct
            row[label] = 1000 * total / epochs
        out[name] = row
    return out


def load_text(load: list[float] | None) -> str:
    """What the load averages say about other jobs during the run."""
    shared = (
        "Per-op dispatch costs (what a crowd layer adds) grow when other jobs share the cores, "
        "so read the ratios of a tiny MLP step as an upper range."
    )
    if load is None:  # runs saved before the load was recorded
        return "The 2 cores were shared with other jobs during the run. " + shared
    before, after = load
    text = f"Load average (1 min) {before:.1f} before the run and {after:.1f} after it"
    # the run itself keeps one core busy: a load above about 1.5 means other jobs ran too
    if max(before, after) > 1.5:
        return text + ": the cores were shared with other jobs. " + shared
    return text + ": no other job was running."


def render(res: dict[str, Any]) -> str:
    lines = [
        "## Crowd-layer overhead per epoch: MLP head and CNN",
        "",
        f"`python benchmarks/crowd_layer_overhead.py --reps {res['reps']} --epochs "
        f"{res['epochs']['MLP head']} --cnn-epochs {res['epochs']['CNN']}` "
        f"({res['wall_s']:.0f} s wall). {res['machine']}. torch with 1 thread. "
        + load_text(res.get("load")),
        "",
        "Both networks in one run, trained by `CrowdClassifier` (Adam, batch 64, fixed epochs, "
        "no validation, seed 0), repetitions interleaved in a random order, first epoch of "
        "each fit dropped. *CPU s/epoch*: median over repetitions of the fit's median thread "
        "CPU time per epoch. *Ratio*: median over repetitions of (method / plain of the same "
        "repetition), with the range. *Extra CPU ms/epoch*: paired mean difference against "
        "plain with its 95 % t interval over the repetitions. Data: MLP head — LabelMe-AMT "
        "features (1,000 images × 512, 59 workers, 2,547 answers, 8 classes), "
        "`mlp_head(512, 8)`; CNN — 512 synthetic 64×64 images of 4 shape classes, 59 "
        "simulated annotators with 1-3 labels each, `small_cnn(1, 4, width=8)`.",
        "",
        "| network | method | CPU s/epoch | ratio vs plain | extra CPU ms/epoch (95 % CI) | "
        f"within {BUDGET:.2f}×? |",
        "|---|---|---|---|---|---|",
    ]
    for s in res["summary"].values():
        d = s["extra_ms"]
        plain = s["method"] == "plain (DL-MV)"
        ok = (
            "–"
            if plain or s["method"] == FLOOR
            else ("yes" if s["ratio_median"] <= BUDGET else "**no**")
        )
        ci = "–" if plain else f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
        lines.append(
            f"| {s['kind']} | {s['method']} | {s['cpu_s_per_epoch']:.4f} | "
            f"{s['ratio_median']:.2f} ({s['ratio_min']:.2f}–{s['ratio_max']:.2f}) | {ci} | {ok} |"
        )
    mlp = res["summary"]["MLP head|CL-MW"]
    cnn = res["summary"]["CNN|CL-MW"]
    floor = res["summary"][f"MLP head|{FLOOR}"]
    per_batch = mlp["extra_ms"]["mean"] / 16  # 1,000 items / batch 64
    plain_step = 1000 * res["summary"]["MLP head|plain (DL-MV)"]["cpu_s_per_epoch"] / 16
    lines += [
        "",
        f"The {BUDGET:.2f}× budget "
        + ("holds" if cnn["ratio_median"] <= BUDGET else "does not hold")
        + f" on the CNN (CL-MW {cnn['ratio_median']:.2f}×) and "
        + ("holds" if mlp["ratio_median"] <= BUDGET else "does not hold")
        + f" on the MLP head (CL-MW {mlp['ratio_median']:.2f}×). On the MLP head the crowd "
        f"layer adds about {per_batch:.2f} CPU ms per mini-batch (16 per epoch): the softmax, "
        "one index_select of the annotators' transforms, a batched matrix product and the "
        "cross-entropy over the batch's B × M padded (item, annotator) pairs (M = 3, the most "
        "labels of an item; built once per fit, so no step searches its labels), their "
        "backward, and one more parameter for Adam. These are a handful of tiny kernels whose "
        "cost is per-call overhead, not arithmetic (a plain MLP step takes "
        f"{plain_step:.2f} CPU ms); next to a CNN step the same fixed cost is inside the "
        "measurement noise. The diagnostic row *plain + idle parameter* is plain training with "
        "one more 59 × K × K parameter that enters the loss through three tiny operations "
        f"(0 · Σw added to the logits): it alone costs {floor['ratio_median']:.2f}× "
        f"({floor['extra_ms']['mean']:+.2f} CPU ms per epoch), the floor of any crowd layer "
        "run operation by operation on this head, before it computes anything. "
        "A hand-written autograd function for the whole crowd loss (fewer graph nodes, more "
        "Python), dense logits of all 59 annotators followed by a gather, and Adam's fused "
        "kernel (faster for plain and crowd training alike) did not lower the ratio in a "
        "micro-benchmark while this was written. What remains is per-operation overhead of "
        "the kind the diagnostic row measures.",
    ]
    prof = res["profile"]
    names = list(prof)
    lines += [
        "",
        f"Where an MLP-head epoch goes (cProfile, thread CPU ms per epoch, {res['profile_epochs']}"
        " epochs; cProfile inflates Python-heavy code, read the differences):",
        "",
        "| function | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, _s, _f in PROFILE_KEYS:
        lines.append(f"| {label} | " + " | ".join(f"{prof[n][label]:.1f}" for n in names) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=12, help="epochs per MLP-head fit")
    ap.add_argument("--cnn-epochs", type=int, default=4, help="epochs per CNN fit")
    ap.add_argument("--quick", action="store_true", help="2 reps, few epochs; print only")
    ap.add_argument("--from-json", action="store_true", help="re-render from the saved JSON")
    args = ap.parse_args()
    if args.from_json:
        import json

        from _report import REPO

        res = json.loads((REPO / JSON).read_text(encoding="utf-8"))
        md = render(res)
        print(md)
        update_section("crowd_layer_overhead", md)
        return
    import torch

    torch.set_num_threads(1)
    if args.quick:
        args.reps, args.epochs, args.cnn_epochs = 2, 4, 2
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    datasets = {"MLP head": labelme(), "CNN": synthetic_images()}
    epochs = {"MLP head": args.epochs, "CNN": args.cnn_epochs}
    res: dict[str, Any] = measure(datasets, epochs, args.reps, print)
    res["profile_epochs"] = args.epochs
    res["profile"] = profile(datasets["MLP head"], args.epochs)
    res.update(
        reps=args.reps,
        epochs=epochs,
        wall_s=time.perf_counter() - t0,
        machine=machine_line(),
        load=[load0, os.getloadavg()[0]],
    )
    md = render(res)
    print(md)
    if not args.quick:
        update_section("crowd_layer_overhead", md)
        write_json(JSON, res)


if __name__ == "__main__":
    main()
