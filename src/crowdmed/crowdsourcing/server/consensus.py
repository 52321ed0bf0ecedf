"""The live consensus of a study and the quality of its annotators (admin page).

The consensus is computed on the administrator's request, from a snapshot of the votes, and
cached until a new vote arrives. Votes never wait for it: the snapshot is one read
transaction, and the fit runs outside any transaction under its own lock.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crowdmed.crowdsourcing.server.study import Study, votes_frame

__all__ = ["SPAMMER_THRESHOLD", "Consensus", "ConsensusCache", "compute_consensus"]

#: Annotators whose spammer score (Raykar & Yu) is below this are flagged as spammers.
SPAMMER_THRESHOLD = 0.1


@dataclass(frozen=True)
class Consensus:
    """A consensus snapshot.

    Attributes:
        version: ``(number of votes, last vote row id)`` of the snapshot.
        items: One row per item with at least one label: ``item, n_labels, majority_vote,
            dawid_skene, p_dawid_skene`` and, for a binary study, ``sens_spec, p_sens_spec``
            (class names; ``p_*`` the posterior of the chosen class), plus ``gold``.
        annotators: One row per annotator: ``annotator, status, quiz_accuracy, n_labels,
            n_unsure, sensitivity, specificity, spammer_score, n_gold, gold_accuracy, flagged``.
        seconds: Time the fit took.
    """

    version: tuple[int, int]
    items: pd.DataFrame
    annotators: pd.DataFrame
    seconds: float


def _annotator_rows(study: Study) -> pd.DataFrame:
    rows = study.storage.annotators()
    return pd.DataFrame(
        {
            "annotator": [r["name"] for r in rows],
            "status": [r["status"] for r in rows],
            "quiz_accuracy": [
                np.nan if r["quiz_accuracy"] is None else r["quiz_accuracy"] for r in rows
            ],
        }
    )


def compute_consensus(study: Study) -> Consensus:
    """Fit majority vote, Dawid–Skene and (binary) the sensitivity/specificity model.

    The sensitivity/specificity model (AggNet's aggregation) uses each annotator's quiz
    accuracy as its trust prior. Per-annotator figures come from
    :func:`crowdmed.quality.annotator_table` against the Dawid–Skene posteriors (the
    sensitivity/specificity posteriors for a binary study); gold accuracy is measured on the
    hidden gold tasks.
    """
    from crowdmed.aggregation import DawidSkene, MajorityVote
    from crowdmed.aggregation.classification.sens_spec import BinarySensSpec
    from crowdmed.data.labels import CrowdLabels
    from crowdmed.quality import annotator_table

    started = time.perf_counter()
    version = study.storage.version()
    classes = list(study.settings.classes)
    k = len(classes)
    people = _annotator_rows(study)
    df = votes_frame(study, phase="task")
    unsure = df[df["label"].isna()].groupby("annotator").size()
    df = df[df["label"].notna()]
    people["n_unsure"] = people["annotator"].map(unsure).fillna(0).astype(int)
    empty_ann = people.assign(
        n_labels=0,
        sensitivity=np.nan,
        specificity=np.nan,
        spammer_score=np.nan,
        n_gold=0,
        gold_accuracy=np.nan,
        flagged=people["status"] == "failed",
    )
    if len(df) == 0:
        items = pd.DataFrame(columns=["item", "n_labels", "majority_vote", "gold"])
        return Consensus(version, items, empty_ann, time.perf_counter() - started)
    item_codes, item_ids = pd.factorize(df["item"], sort=False)
    ann_codes, ann_ids = pd.factorize(df["annotator"], sort=False)
    gold_per_item = df.groupby("item", sort=False)["gold"].first().reindex(item_ids)
    gold = gold_per_item.fillna(-1).to_numpy(dtype=np.int64)
    gamma = people.set_index("annotator")["quiz_accuracy"].reindex(ann_ids).to_numpy(np.float64)
    cl = CrowdLabels.from_triplets(
        item_codes,
        ann_codes,
        df["label"].to_numpy(dtype=np.int64),
        n_items=len(item_ids),
        n_annotators=len(ann_ids),
        n_classes=k,
        item_ids=np.asarray(item_ids, dtype=object),
        annotator_ids=np.asarray(ann_ids, dtype=object),
        classes=np.arange(k),
        gold=gold if (gold >= 0).any() else None,
        quiz_accuracy=gamma if np.isfinite(gamma).any() else None,
    )
    names = np.asarray(classes, dtype=object)
    items = pd.DataFrame({"item": np.asarray(item_ids, dtype=object)})
    items["n_labels"] = np.bincount(item_codes, minlength=len(item_ids))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a young study rarely converges; the page says so
        mv = MajorityVote(random_state=0).fit(cl)
        ds = DawidSkene(max_iter=50, random_state=0).fit(cl)
        reference = ds.posteriors_
        items["majority_vote"] = names[mv.labels_]
        items["dawid_skene"] = names[ds.labels_]
        items["p_dawid_skene"] = ds.posteriors_.max(axis=1)
        if k == 2:
            ss = BinarySensSpec(max_iter=50, random_state=0).fit(cl)
            items["sens_spec"] = names[ss.labels_]
            items["p_sens_spec"] = ss.posteriors_.max(axis=1)
            reference = ss.posteriors_
    items["gold"] = [names[g] if g >= 0 else "" for g in gold]
    table = annotator_table(cl, reference).reset_index()
    table["annotator"] = table["annotator"].astype(str)
    if (gold >= 0).any():
        g = gold[item_codes]
        on = g >= 0
        lab = df["label"].to_numpy(dtype=np.int64)
        n_gold = np.bincount(ann_codes[on], minlength=len(ann_ids))
        right = np.bincount(ann_codes[on], weights=lab[on] == g[on], minlength=len(ann_ids))
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(n_gold > 0, right / np.maximum(n_gold, 1), np.nan)
        table["n_gold"] = n_gold
        table["gold_accuracy"] = acc
    else:
        table["n_gold"] = 0
        table["gold_accuracy"] = np.nan
    keep = ["annotator", "n_labels", "spammer_score", "n_gold", "gold_accuracy"]
    if k == 2:
        keep[2:2] = ["sensitivity", "specificity"]
    merged = people.merge(table[keep], on="annotator", how="left")
    merged["n_labels"] = merged["n_labels"].fillna(0).astype(int)
    merged["n_gold"] = merged["n_gold"].fillna(0).astype(int)
    if k != 2:
        merged["sensitivity"] = np.nan
        merged["specificity"] = np.nan
    merged["flagged"] = (merged["status"] == "failed") | (
        merged["spammer_score"].to_numpy(dtype=np.float64) < SPAMMER_THRESHOLD
    )
    cols = [
        "annotator",
        "status",
        "quiz_accuracy",
        "n_labels",
        "n_unsure",
        "sensitivity",
        "specificity",
        "spammer_score",
        "n_gold",
        "gold_accuracy",
        "flagged",
    ]
    return Consensus(version, items, merged[cols], time.perf_counter() - started)


class ConsensusCache:
    """The latest consensus of a study, recomputed when the votes have changed.

    :meth:`get` returns the cached consensus when no vote arrived since, else fits again (one
    fit at a time; a second caller waits for it rather than starting another).
    """

    def __init__(self, study: Study) -> None:
        self.study = study
        self._lock = threading.Lock()
        self._latest: Consensus | None = None

    def get(self) -> Consensus:
        """The consensus of the current votes."""
        with self._lock:
            version = self.study.storage.version()
            if self._latest is None or self._latest.version != version:
                self._latest = compute_consensus(self.study)
            return self._latest

    def peek(self) -> Any:
        """The cached consensus without computing (``None`` before the first)."""
        return self._latest
