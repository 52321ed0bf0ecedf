"""Simulated crowd votes on a task package (clearly synthetic annotators, for experiments).

A crowd of ``n_annotators`` workers, some of them spammers, answers every task
``votes_per_task`` times. Honest workers have a sensitivity and a specificity drawn uniformly
from the given ranges; spammers answer independently of the truth (a worker-specific rate of
"mitosis" answers). Their quiz accuracy ``γ`` comes out of the gold tasks of the package at
import time, exactly as for a real crowd.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from crowdmed._validation import check_random_state
from crowdmed.crowdsourcing.tasks import CLASS_NAMES
from crowdmed.simulate import binary_confusion, simulate_crowd, spammer_confusion

__all__ = ["SimulatedVotes", "simulate_votes"]


@dataclass(frozen=True)
class SimulatedVotes:
    """Votes of a simulated crowd.

    Attributes:
        votes: Table ``task, annotator, label`` with labels ``mitosis`` / ``not mitosis``.
        annotators: One row per annotator: ``annotator, kind`` (``"honest"`` or
            ``"spammer"``), true ``sensitivity`` and ``specificity``, and the true
            ``spammer_score`` ``(sensitivity + specificity - 1)^2``.
    """

    votes: pd.DataFrame
    annotators: pd.DataFrame


def simulate_votes(
    tasks: npt.ArrayLike,
    truth: npt.ArrayLike,
    *,
    n_annotators: int = 20,
    votes_per_task: int = 10,
    spammer_fraction: float = 0.25,
    sensitivity: tuple[float, float] = (0.6, 0.95),
    specificity: tuple[float, float] = (0.6, 0.95),
    random_state: int | np.random.Generator | None = 0,
) -> SimulatedVotes:
    """Simulate crowd votes on tasks whose true answers are known.

    Args:
        tasks: Task ids, shape ``(n_tasks,)``.
        truth: Integer array of shape ``(n_tasks,)``: ``1`` for a mitosis, ``0`` otherwise.
        n_annotators: Number of workers (named ``sim-001``, ``sim-002``...).
        votes_per_task: Distinct workers per task, in ``1..n_annotators``.
        spammer_fraction: Share of the workers who are spammers, in ``[0, 1]``.
        sensitivity: Range ``(low, high)`` of the honest workers' sensitivity.
        specificity: Range ``(low, high)`` of the honest workers' specificity.
        random_state: Seed or ``numpy.random.Generator``.

    Returns:
        The votes and the true annotator parameters.

    Raises:
        ValueError: If the sizes or ranges are invalid.

    Examples:
        >>> sim = simulate_votes(["t1", "t2", "t3"], [1, 0, 1], n_annotators=4,
        ...                      votes_per_task=2, random_state=0)
        >>> len(sim.votes), sorted(sim.annotators["kind"].unique())
        (6, ['honest', 'spammer'])
    """
    ids = np.asarray(tasks).astype(str)
    t = np.asarray(truth)
    if t.shape != ids.shape:
        raise ValueError(f"`truth` must have one entry per task ({len(ids)}); got shape {t.shape}.")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("`truth` must hold 0 (not mitosis) or 1 (mitosis) for every task.")
    if not 0 <= spammer_fraction <= 1:
        raise ValueError(f"`spammer_fraction` must lie in [0, 1]; got {spammer_fraction}.")
    for name, (lo, hi) in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"`{name}` must be a range (low, high) within [0, 1]; got {lo, hi}.")
    rng = check_random_state(random_state)
    n_spam = round(spammer_fraction * n_annotators)
    n_honest = n_annotators - n_spam
    sens = rng.uniform(*sensitivity, size=n_honest)
    spec = rng.uniform(*specificity, size=n_honest)
    parts = [binary_confusion(sensitivity=sens, specificity=spec)] if n_honest else []
    if n_spam:
        parts.append(spammer_confusion(n_spam, 2, distribution="random", random_state=rng))
    conf = np.concatenate(parts)
    order = rng.permutation(n_annotators)  # spammers are not the last names
    conf = conf[order]
    kind = np.array(["honest"] * n_honest + ["spammer"] * n_spam)[order]
    cl = simulate_crowd(t.astype(np.int64), conf, labels_per_item=votes_per_task, random_state=rng)
    names = np.array([f"sim-{i + 1:03d}" for i in range(n_annotators)])
    votes = pd.DataFrame(
        {
            "task": ids[cl.items],
            "annotator": names[cl.annotators],
            "label": np.asarray(CLASS_NAMES)[cl.labels],
        }
    )
    s, p = conf[:, 1, 1], conf[:, 0, 0]
    annotators = pd.DataFrame(
        {
            "annotator": names,
            "kind": kind,
            "sensitivity": s,
            "specificity": p,
            "spammer_score": (s + p - 1.0) ** 2,
        }
    )
    return SimulatedVotes(votes=votes, annotators=annotators)
