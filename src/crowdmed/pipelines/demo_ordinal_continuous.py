"""The demo's ordinal and continuous accuracy tables, on simulated readers with known truth.

The bundled ordinal ratings (LIDC-IDRI malignancy) have no gold standard, and no bundled data
set has continuous readings, so the ordinal and continuous aggregators are scored here on
simulated readers whose truth is known:

* **ordinal**: :func:`~crowdmed.simulate.simulate_ordinal_readers` with 5 grades (like LIDC
  malignancy), 8 readers of whom 4 read each item (LIDC has 2-4 per nodule), each with a
  severity offset (strict or lenient) and a noise scale. Every method of
  :data:`~crowdmed.aggregation.ordinal.ORDINAL_METHODS`, plus Dawid–Skene and majority vote
  as nominal baselines; exact and within-one accuracy against the true grade.
* **continuous**: :func:`~crowdmed.simulate.simulate_continuous_readers`, 8 readers who all
  read every item, each with a bias, a scale and a precision. Every method of
  :data:`~crowdmed.aggregation.continuous.CONTINUOUS_METHODS`; MAE and RMSE against the true
  value.

The reader parameters are fixed (below); the draws come from the demo's seed. Offsets and
biases have mean zero and scales mean one, the origin and unit the models identify, so the
estimates are on the scale of the truth.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from crowdmed.aggregation import Method, make_aggregator
from crowdmed.aggregation.continuous import CONTINUOUS_METHODS
from crowdmed.aggregation.ordinal import ORDINAL_METHODS
from crowdmed.data.labels import CrowdLabels
from crowdmed.simulate import simulate_continuous_readers, simulate_ordinal_readers

__all__ = [
    "CONTINUOUS_SETTINGS",
    "ORDINAL_SETTINGS",
    "SimulatedTables",
    "run_ordinal_continuous_part",
]

#: The simulated ordinal readers: offsets and noise in grades (a grade is one latent unit).
ORDINAL_SETTINGS: dict[str, Any] = {
    "n_items": 400,
    "n_classes": 5,
    "labels_per_item": 4,
    "offsets": [-1.0, -0.5, 0.0, 0.5, 1.0, -1.0, 0.5, 0.5],
    "noise": [1.0, 1.5, 1.2, 0.8, 1.4, 1.0, 1.6, 1.1],
}
#: The simulated continuous readers: truth N(0, 1); reading = scale · truth + bias + noise.
CONTINUOUS_SETTINGS: dict[str, Any] = {
    "n_items": 300,
    "bias": [-1.0, -0.5, 0.0, 0.5, 1.0, -1.0, 0.5, 0.5],
    "precision": [4.0, 1.0, 0.25, 2.0, 1.0, 0.5, 4.0, 0.2],
    "scale": [1.0, 0.8, 1.2, 1.0, 0.6, 1.4, 1.0, 1.0],
}
_NOMINAL = (Method.DAWID_SKENE, Method.MAJORITY_VOTE)


@dataclass
class SimulatedTables:
    """The two accuracy tables and what they were computed on.

    Attributes:
        ordinal: One row per method: ``method, kind, exact_accuracy, within_one_accuracy,
            n_items, fit_seconds, n_iter, converged, note``; ``kind`` is ``"ordinal"`` or
            ``"nominal baseline"``.
        continuous: One row per method: ``method, mae, rmse, n_items, fit_seconds, n_iter,
            converged, note``.
        summary: The settings, and how well the models recovered the readers (largest
            error of the graded-response offsets and of the Raykar biases).
    """

    ordinal: pd.DataFrame
    continuous: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _fit(est: Any, labels: Any) -> tuple[float, str]:
    """Fit ``est``; return the wall time and the first sentence of each warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        est.fit(labels)
        seconds = time.perf_counter() - start
    return seconds, "; ".join(dict.fromkeys(str(w.message).split(". ")[0] for w in caught))


def _row(method: str, est: Any, seconds: float, note: str, n_items: int) -> dict[str, Any]:
    return {
        "method": method,
        "n_items": n_items,
        "fit_seconds": seconds,
        "n_iter": getattr(est, "n_iter_", None),
        "converged": getattr(est, "converged_", None),
        "note": note,
    }


def _seeded(est: Any, seed: int | None) -> Any:
    if "random_state" in est.get_params():
        est.set_params(random_state=seed)
    return est


def _ordinal_table(
    rng: np.random.Generator, seed: int | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    s = ORDINAL_SETTINGS
    offsets = np.asarray(s["offsets"]) - np.mean(s["offsets"])
    sim = simulate_ordinal_readers(
        s["n_items"], offsets, s["noise"], n_classes=s["n_classes"],
        labels_per_item=s["labels_per_item"], random_state=rng,
    )  # fmt: skip
    cl = CrowdLabels.from_dense(sim.labels, n_classes=s["n_classes"])
    candidates: list[tuple[str, str, Any]] = [
        (m.value, "ordinal", cls()) for m, cls in ORDINAL_METHODS.items()
    ]
    candidates += [(m.value, "nominal baseline", make_aggregator(m)) for m in _NOMINAL]
    rows, extra = [], {}
    for name, kind, est in candidates:
        seconds, note = _fit(_seeded(est, seed), cl)
        row = _row(name, est, seconds, note, cl.n_items)
        row["kind"] = kind
        row["exact_accuracy"] = float(np.mean(est.labels_ == sim.truth))
        row["within_one_accuracy"] = float(np.mean(np.abs(est.labels_ - sim.truth) <= 1))
        rows.append(row)
        if hasattr(est, "offsets_"):
            extra["graded_response_offset_max_error"] = float(np.abs(est.offsets_ - offsets).max())
    cols = ["method", "kind", "exact_accuracy", "within_one_accuracy", "n_items"]
    table = pd.DataFrame(rows)
    return table[cols + [c for c in table.columns if c not in cols]], extra


def _continuous_table(rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, Any]]:
    s = CONTINUOUS_SETTINGS
    bias = np.asarray(s["bias"]) - np.mean(s["bias"])
    scale = np.asarray(s["scale"]) / np.mean(s["scale"])
    sim = simulate_continuous_readers(
        s["n_items"], bias, s["precision"], scale=scale, random_state=rng
    )
    rows, extra = [], {}
    for method, cls in CONTINUOUS_METHODS.items():
        est = cls()
        seconds, note = _fit(est, sim.values)
        row = _row(method.value, est, seconds, note, sim.truth.size)
        err = est.labels_ - sim.truth
        row["mae"] = float(np.abs(err).mean())
        row["rmse"] = float(np.sqrt(np.mean(err**2)))
        rows.append(row)
        if method.value == "raykar":
            extra["raykar_bias_max_error"] = float(np.abs(est.bias_ - bias).max())
    cols = ["method", "mae", "rmse", "n_items"]
    table = pd.DataFrame(rows)
    return table[cols + [c for c in table.columns if c not in cols]], extra


def run_ordinal_continuous_part(random_state: int | None = 0) -> SimulatedTables:
    """Score every ordinal and continuous aggregator on simulated readers with known truth.

    Args:
        random_state: Seed of the simulated readers (two independent streams, one per
            table) and of the aggregators that take one.

    Returns:
        The ordinal and continuous accuracy tables and a summary.

    Examples:
        >>> tables = run_ordinal_continuous_part(random_state=0)
        >>> sorted(tables.ordinal["method"])  # doctest: +NORMALIZE_WHITESPACE
        ['dawid-skene', 'graded-response', 'majority-vote', 'median', 'ordinal-majority-vote']
        >>> sorted(tables.continuous["method"])
        ['mean', 'median', 'raykar', 'scale-bias']
    """
    ordinal_rng, continuous_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(random_state).spawn(2)
    )
    ordinal, ord_extra = _ordinal_table(ordinal_rng, random_state)
    continuous, cont_extra = _continuous_table(continuous_rng)
    for table in (ordinal, continuous):
        table["n_iter"] = table["n_iter"].astype("Int64")
        table["converged"] = table["converged"].astype("boolean")
    summary = {
        "simulated": True,
        "seed": random_state,
        "ordinal_settings": ORDINAL_SETTINGS,
        "continuous_settings": CONTINUOUS_SETTINGS,
        **ord_extra,
        **cont_extra,
    }
    return SimulatedTables(ordinal, continuous, summary)
