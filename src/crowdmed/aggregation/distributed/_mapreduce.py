"""Map-reduce EM on item partitions: the per-partition steps and the driver loop (NumPy only).

A label table split into partitions **by item** (every label of an item in one partition)
fits the latent-class models exactly: an item's posterior needs only its own labels and the
global parameters, and every M-step needs only sums over items. One EM iteration is one pass:

* **map** (per partition, on the workers): the E-step of the partition's items under the
  current parameters, its log-evidence, and its share of the M-step's sufficient
  statistics, computed from those posteriors;
* **reduce**: the statistics and log-evidences of all partitions are added up;
* **M-step** (on the driver): the parameters from the summed statistics, with the in-memory
  estimator's own ``_m_step_from_stats``.

Posteriors are never kept between passes; each pass recomputes them from the parameters, so
the workers hold only their encoded labels. The per-partition steps call the in-memory
estimators' methods (``_init_posteriors``, ``_counts``, ``_log_joint``) on a
:class:`~crowdmed.data.CrowdLabels` of the partition (items local to it, annotators and classes
global), so the map-reduce fit gives the in-memory posteriors up to the order of floating-point
sums (about 1e-12).

**Adding a model.** A model plugs in through a :class:`PartitionModel` subclass:

* :meth:`PartitionModel.start` - starting posteriors of a partition's items;
* :meth:`PartitionModel.statistics` - the additive statistics of a partition given
  posteriors, as a ``dict`` of arrays (anything that is a sum over items);
* :meth:`PartitionModel.m_step` - parameters from the summed statistics (driver side; the
  estimator may keep state between M-steps, e.g. a warm start);
* :meth:`PartitionModel.e_step_params` - the fitted attributes the E-step reads, shipped to
  the workers once per iteration;
* :meth:`PartitionModel.log_joint` - ``log P(class, labels of item)`` of a partition's items.

:class:`ConfusionModel` serves every model whose M-step needs only the soft confusion counts
``[a, k, l]``, each annotator's label counts, the summed posteriors and the number of items,
and whose E-step reads ``confusion_`` and ``priors_``: Dawid–Skene and one-coin.
:class:`GradedResponseModel` extends it to the ordinal graded-response model
(:class:`~crowdmed.aggregation.ordinal.GradedResponse`), whose M-step maximises
``Σ counts[a, k, l] · log P(a says l | k)`` over thresholds, offsets and noise scales: the same
counts, an optimisation on the driver (with its warm start kept there between M-steps), and the
same ``_log_joint``. Another model plugs in the same way: an ``_m_step_from_stats`` on the
estimator, an adapter, and an entry in :data:`MODELS`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from crowdmed.aggregation.base import BaseAggregator, argmax_ties, normalize_log
from crowdmed.aggregation.classification.dawid_skene import DawidSkene, OneCoinDawidSkene
from crowdmed.aggregation.classification.majority_vote import (
    MajorityVote,
    confusion_from_counts,
)
from crowdmed.aggregation.ordinal.graded_response import GradedResponse
from crowdmed.data.labels import CrowdLabels
from crowdmed.exceptions import ConvergenceWarning

__all__ = [
    "MODELS",
    "Block",
    "ConfusionModel",
    "GradedResponseModel",
    "LocalBlock",
    "MajorityVoteModel",
    "PartitionModel",
    "consensus_frame",
    "consensus_meta",
    "encode_local",
    "encode_partition",
    "fit_blocks",
    "globalize",
    "item_hashes",
    "local_summary",
    "partition_model",
]

Stats = dict[str, Any]
#: ``map_reduce(function, *args)``: ``function(block, *args)`` on every partition, summed.
MapReduce = Callable[..., Stats]


@dataclass(frozen=True)
class Block:
    """The labels of one partition, encoded.

    Attributes:
        labels: The partition's labels; items are ``0..n-1`` within the partition (their ids in
            ``labels.item_ids``), annotators and classes are the global ones. ``None`` for an
            empty partition.
        index: Position of the partition (seeds its tie-breaking).
    """

    labels: CrowdLabels | None
    index: int

    def __sizeof__(self) -> int:
        """Bytes held, with the cached sparse matrices (what Dask's memory accounting reads)."""
        cl = self.labels
        if cl is None:
            return 64
        arrays = [cl.items, cl.annotators, cl.labels, cl.item_ids, cl.annotator_ids]
        for value in cl._cache.values():
            if hasattr(value, "indptr"):  # a scipy CSR matrix
                arrays += [value.data, value.indices, value.indptr]
            elif isinstance(value, np.ndarray):
                arrays.append(value)
        return 64 + sum(int(a.nbytes) for a in arrays)


def encode_partition(
    df: pd.DataFrame,
    *,
    item: str,
    annotator: str,
    label: str,
    annotator_ids: np.ndarray,
    classes: np.ndarray,
    index: int,
) -> Block:
    """Encode one partition of a long label table against the global annotators and classes.

    Args:
        df: The partition: one row per annotation.
        item: Name of the item column.
        annotator: Name of the annotator column.
        label: Name of the label column.
        annotator_ids: Every annotator id of the table, shape ``(n_annotators,)``.
        classes: Every class value, in order, shape ``(n_classes,)``.
        index: Position of the partition.

    Returns:
        The encoded block.

    Raises:
        ValueError: An annotator or label missing from the global lists, or an
            ``(item, annotator)`` pair repeated within the partition.
    """
    if len(df) == 0:
        return Block(None, index)
    items, item_ids = pd.factorize(df[item], sort=False)
    anns = pd.Index(annotator_ids).get_indexer(df[annotator])
    labs = pd.Index(classes).get_indexer(df[label])
    for name, codes, col in (("annotator", anns, annotator), ("label", labs, label)):
        if (codes < 0).any():
            bad = pd.unique(df[col].to_numpy()[codes < 0])[:5].tolist()
            raise ValueError(
                f"Column {col!r} has values {bad} missing from the table's {name}s in "
                f"partition {index}; the table changed while it was read."
            )
    cl = CrowdLabels.from_triplets(
        items,
        anns,
        labs,
        n_items=len(item_ids),
        n_annotators=len(annotator_ids),
        n_classes=len(classes),
        item_ids=np.asarray(item_ids),
        annotator_ids=annotator_ids,
        classes=classes,
    )
    # Validated: keep the triplets in the smallest integer types (9 instead of 24 bytes per
    # label in the worker's memory); every product of the EM code fits in them.
    return Block(
        CrowdLabels(
            items=cl.items.astype(_int_type(cl.n_items * cl.n_classes)),
            annotators=cl.annotators.astype(_int_type(cl.n_annotators * cl.n_classes)),
            labels=cl.labels.astype(_int_type(cl.n_classes)),
            item_ids=cl.item_ids,
            annotator_ids=cl.annotator_ids,
            classes=cl.classes,
        ),
        index,
    )


@dataclass(frozen=True)
class LocalBlock:
    """A partition encoded with its own codes, before the table's annotators are known.

    The first read of the data: items, annotators and labels are factorized within the
    partition (``*_values`` hold the values of the codes), missing values are counted and
    repeated ``(item, annotator)`` pairs refused. :func:`globalize` then maps the codes to the
    table's sorted annotators and classes, without reading the data again.
    """

    items: np.ndarray
    item_ids: np.ndarray
    annotators: np.ndarray
    annotator_values: np.ndarray
    labels: np.ndarray
    label_values: np.ndarray
    missing: dict[str, int]
    index: int


def encode_local(
    df: pd.DataFrame, *, item: str, annotator: str, label: str, index: int
) -> LocalBlock:
    """Encode one partition with codes of its own (see :class:`LocalBlock`).

    Raises:
        ValueError: An ``(item, annotator)`` pair repeated within the partition.
    """
    codes, values, missing = [], [], {}
    for col in (item, annotator, label):
        c, v = pd.factorize(df[col], sort=False)  # missing values get the code -1
        missing[col] = int((c < 0).sum())
        codes.append(c.astype(_int_type(max(len(v), 1))))
        values.append(np.asarray(v))
    it, an, lab = codes
    if len(it) and not any(missing.values()):
        key = it.astype(np.int64) * len(values[1]) + an
        srt = np.sort(key)
        dup = srt[1:][srt[1:] == srt[:-1]]
        if len(dup):
            pairs = [
                (values[0][k // len(values[1])], values[1][k % len(values[1])])
                for k in np.unique(dup)[:5]
            ]
            pairs = [tuple(x.item() if isinstance(x, np.generic) else x for x in p) for p in pairs]
            raise ValueError(
                f"Each (item, annotator) pair must occur once; got duplicates {pairs}. Keep one "
                "label per annotator and item (e.g. the latest) before aggregating."
            )
    return LocalBlock(it, values[0], an, values[1], lab, values[2], missing, index)


def local_summary(block: LocalBlock) -> dict[str, Any]:
    """What the driver needs from a partition: missing values, annotators, labels, item range."""
    lo = hi = None
    if len(block.item_ids):
        with contextlib.suppress(TypeError):  # ids of mixed types: no range
            lo, hi = block.item_ids.min(), block.item_ids.max()
    return {
        "missing": block.missing,
        "annotators": block.annotator_values,
        "labels": block.label_values,
        "range": (lo, hi),
        "n": len(block.items),
    }


def item_hashes(block: LocalBlock) -> np.ndarray:
    """64-bit hashes of a partition's distinct item ids (to find items in several partitions)."""
    return pd.util.hash_array(np.asarray(block.item_ids, dtype=object))


def globalize(block: LocalBlock, annotator_ids: np.ndarray, classes: np.ndarray) -> Block:
    """Map a partition's own codes to the table's annotators and classes (no re-reading).

    Args:
        block: The partition encoded by :func:`encode_local`.
        annotator_ids: Every annotator id of the table, shape ``(n_annotators,)``.
        classes: Every class value, in order, shape ``(n_classes,)``.

    Returns:
        The block fitted by the EM passes.
    """
    if len(block.items) == 0:
        return Block(None, block.index)
    n_ann, k = len(annotator_ids), len(classes)
    ann_map = pd.Index(annotator_ids).get_indexer(block.annotator_values)
    lab_map = pd.Index(classes).get_indexer(block.label_values)
    if (ann_map < 0).any() or (lab_map < 0).any():
        raise ValueError(
            f"Partition {block.index} has annotators or labels missing from the table's lists; "
            "the table changed while it was read."
        )
    cl = CrowdLabels(
        items=block.items.astype(_int_type(len(block.item_ids) * k)),
        annotators=ann_map[block.annotators].astype(_int_type(n_ann * k)),
        labels=lab_map[block.labels].astype(_int_type(k)),
        item_ids=block.item_ids,
        annotator_ids=annotator_ids,
        classes=classes,
    )
    return Block(cl, block.index)


def _int_type(largest: int) -> type[np.signedinteger[Any]]:
    """The smallest signed integer type holding ``largest``."""
    for t in (np.int8, np.int16, np.int32):
        if largest <= np.iinfo(t).max:
            return t
    return np.int64


class PartitionModel:
    """How one truth-inference model runs on item partitions (see the module docstring).

    Args:
        estimator: The in-memory estimator; its hyperparameters are used and, on the driver,
            its fitted parameters are set by :meth:`m_step`.
    """

    #: Whether the model iterates (EM) or is done after the first pass (majority vote).
    iterative: ClassVar[bool] = True

    def __init__(self, estimator: BaseAggregator) -> None:
        self.estimator = estimator

    def start(self, cl: CrowdLabels) -> np.ndarray:
        """Starting posteriors of the partition's items, shape ``(n_items, n_classes)``."""
        raise NotImplementedError

    def constant_statistics(self, cl: CrowdLabels) -> Stats:
        """Statistics fixed across iterations (summed once): sizes and per-annotator counts."""
        return {"n_items": cl.n_items, "n_labels": cl.n_labels, "label_counts": cl.label_counts()}

    def statistics(self, cl: CrowdLabels, posteriors: np.ndarray) -> Stats:
        """The partition's share of the M-step statistics under ``posteriors``."""
        raise NotImplementedError

    def m_step(self, stats: Stats) -> None:
        """Set the estimator's parameters from the summed statistics (driver side)."""
        raise NotImplementedError

    def e_step_params(self) -> dict[str, np.ndarray]:
        """The fitted attributes :meth:`log_joint` reads."""
        raise NotImplementedError

    def log_joint(self, cl: CrowdLabels) -> np.ndarray:
        """``log P(class, labels of item)`` of the partition's items, ``(n_items, K)``."""
        raise NotImplementedError

    def posteriors(self, cl: CrowdLabels) -> np.ndarray:
        """Final posteriors of the partition's items under the fitted parameters."""
        return normalize_log(self.log_joint(cl))[0]

    def log_param_prior(self) -> float:
        """Log prior density of the current parameters (the smoothing pseudo-counts)."""
        return 0.0

    def snapshot(self) -> PartitionModel:
        """A light copy carrying only what the workers need for the E-step."""
        est = type(self.estimator)(**self.estimator.get_params())
        for name, value in self.e_step_params().items():
            setattr(est, name, value)
        return type(self)(est)

    def fitted_attributes(self) -> dict[str, Any]:
        """Fitted parameters reported by the distributed fit."""
        return dict(self.e_step_params())


class ConfusionModel(PartitionModel):
    """Models with per-annotator confusion matrices fitted by EM (Dawid–Skene, one-coin)."""

    estimator: DawidSkene

    def start(self, cl: CrowdLabels) -> np.ndarray:
        """Soft majority vote, the in-memory estimator's own start."""
        return self.estimator._init_posteriors(cl)

    def statistics(self, cl: CrowdLabels, posteriors: np.ndarray) -> Stats:
        """Soft confusion counts ``[a, k, l]`` and the summed posteriors."""
        counts = self.estimator._counts(cl, posteriors)
        return {"counts": counts, "class_totals": posteriors.sum(axis=0)}

    def m_step(self, stats: Stats) -> None:
        """``_m_step_from_stats`` of the estimator."""
        self.estimator._m_step_from_stats(
            stats["counts"], stats["label_counts"], stats["class_totals"], stats["n_items"]
        )

    def e_step_params(self) -> dict[str, np.ndarray]:
        """``confusion_`` and ``priors_``."""
        return {"confusion_": self.estimator.confusion_, "priors_": self.estimator.priors_}

    def log_joint(self, cl: CrowdLabels) -> np.ndarray:
        """The estimator's ``_log_joint``."""
        return self.estimator._log_joint(cl)

    def log_param_prior(self) -> float:
        """The estimator's ``_log_param_prior``."""
        return self.estimator._log_param_prior()

    def fitted_attributes(self) -> dict[str, Any]:
        """``confusion_``, ``priors_`` and ``skills_`` (one-coin)."""
        out = super().fitted_attributes()
        if hasattr(self.estimator, "skills_"):
            out["skills_"] = self.estimator.skills_
        return out


class GradedResponseModel(ConfusionModel):
    """The ordinal graded-response model: its M-step is an optimisation over the summed counts.

    The optimiser's state (``_theta``, the warm start of every M-step) lives on the driver's
    estimator; the workers only receive ``confusion_`` and ``priors_``.
    """

    estimator: Any

    def statistics(self, cl: CrowdLabels, posteriors: np.ndarray) -> Stats:
        """Soft counts ``[a, k, l]`` (as ``GradedResponse._m_step``) and summed posteriors."""
        k = cl.n_classes
        counts = (cl.incidence_t() @ posteriors).reshape(cl.n_annotators, k, k).transpose(0, 2, 1)
        return {"counts": counts, "class_totals": posteriors.sum(axis=0)}

    def m_step(self, stats: Stats) -> None:
        """``_m_step_from_stats``, from the model's starting point on the first call."""
        if not hasattr(self.estimator, "_theta"):
            n_annotators, k, _ = np.shape(stats["counts"])
            self.estimator._init_params(k, n_annotators)
        super().m_step(stats)

    def fitted_attributes(self) -> dict[str, Any]:
        """``confusion_``, ``priors_`` and the ordinal parameters (thresholds, offsets ...)."""
        out = super().fitted_attributes()
        for name in ("thresholds_", "locations_", "offsets_", "noise_"):
            out[name] = getattr(self.estimator, name)
        return out


class MajorityVoteModel(PartitionModel):
    """Majority vote: vote shares, and each annotator's confusion against them."""

    iterative = False
    estimator: MajorityVote

    def start(self, cl: CrowdLabels) -> np.ndarray:
        """Vote shares."""
        return self.estimator._votes(cl, None)

    def statistics(self, cl: CrowdLabels, posteriors: np.ndarray) -> Stats:
        """Soft confusion counts ``[a, k, l]`` against the vote shares."""
        k = cl.n_classes
        flat = cl.incidence_t() @ posteriors
        return {"counts": flat.reshape(cl.n_annotators, k, k).transpose(0, 2, 1)}

    def m_step(self, stats: Stats) -> None:
        """Confusion matrices from the summed counts."""
        self.estimator.confusion_ = confusion_from_counts(stats["counts"])

    def e_step_params(self) -> dict[str, np.ndarray]:
        """``confusion_`` (the vote needs no parameter; it is reported)."""
        return {"confusion_": self.estimator.confusion_}

    def posteriors(self, cl: CrowdLabels) -> np.ndarray:
        """Vote shares."""
        return self.start(cl)


#: Estimator types that run on partitions, and their adapters (exact types: a subclass may
#: change the M-step).
MODELS: dict[type[BaseAggregator], type[PartitionModel]] = {
    MajorityVote: MajorityVoteModel,
    DawidSkene: ConfusionModel,
    OneCoinDawidSkene: ConfusionModel,
    GradedResponse: GradedResponseModel,
}


def partition_model(estimator: BaseAggregator) -> PartitionModel:
    """The adapter of ``estimator``, after checking its hyperparameters.

    Raises:
        ValueError: A model without a partitioned fit, or ``init="random"`` (its draws
            depend on the whole item list).
    """
    adapter = MODELS.get(type(estimator))
    if adapter is None:
        names = sorted(t.__name__ for t in MODELS)
        raise ValueError(
            f"`estimator` must be one of {names} for a partitioned fit; got "
            f"{type(estimator).__name__}. Fit other models in memory."
        )
    estimator._check_params()
    if getattr(estimator, "init", "majority_vote") != "majority_vote":
        raise ValueError(
            f"`init` must be 'majority_vote' for a partitioned fit; got "
            f"{getattr(estimator, 'init', None)!r}. "
            "Random starting posteriors depend on the whole item list."
        )
    return adapter(estimator)


# ---------------------------------------------------------------------- per-partition steps
def start_pass(block: Block, model: PartitionModel) -> Stats:
    """First pass: constant statistics plus the statistics of the starting posteriors."""
    if block.labels is None:
        return {}
    cl = block.labels
    return {**model.constant_statistics(cl), **model.statistics(cl, model.start(cl))}


def em_pass(block: Block, model: PartitionModel) -> Stats:
    """One EM pass: E-step under the model's parameters, log-evidence, next statistics."""
    if block.labels is None:
        return {}
    cl = block.labels
    post, log_evidence = normalize_log(model.log_joint(cl))
    return {"log_likelihood": log_evidence, **model.statistics(cl, post)}


def add_stats(*parts: Stats) -> Stats:
    """Sum statistics key by key (partitions without labels contribute ``{}``)."""
    out: Stats = {}
    for part in parts:
        for key, value in part.items():
            out[key] = value if key not in out else out[key] + value
    return out


def consensus_frame(
    block: Block,
    model: PartitionModel,
    *,
    from_start: bool,
    seed: int | None,
    meta: pd.DataFrame,
) -> pd.DataFrame:
    """Consensus rows of a partition: ``item, label, confidence, p_<class>...``.

    Args:
        block: The partition.
        model: The fitted model (a snapshot).
        from_start: Report the starting posteriors (``max_iter=0``).
        seed: ``None`` breaks ties by the lowest class index; otherwise ties are drawn from a
            generator seeded with ``(seed, block.index)``.
        meta: An empty frame with the output's columns and dtypes (for empty partitions).
    """
    cl = block.labels
    if cl is None:
        return meta.iloc[:0]
    post = model.start(cl) if from_start else model.posteriors(cl)
    rng = None if seed is None else np.random.default_rng([seed, block.index])
    frame: dict[str, Any] = {
        "item": cl.item_ids,
        "label": cl.classes[argmax_ties(post, rng)],
        "confidence": post.max(axis=1),
    }
    for k in range(cl.n_classes):
        frame[meta.columns[3 + k]] = post[:, k]
    return pd.DataFrame(frame).astype(meta.dtypes.to_dict(), copy=False)


def consensus_meta(classes: np.ndarray, item_dtype: Any) -> pd.DataFrame:
    """The empty consensus frame: column names and dtypes."""
    frame: dict[str, Any] = {
        "item": pd.Series([], dtype=item_dtype),
        "label": pd.Series([], dtype=np.asarray(classes).dtype),
        "confidence": pd.Series([], dtype=np.float64),
    }
    for value in classes:
        frame[f"p_{value}"] = pd.Series([], dtype=np.float64)
    return pd.DataFrame(frame)


# ---------------------------------------------------------------------- driver
def fit_blocks(
    model: PartitionModel,
    map_reduce: MapReduce,
    *,
    callback: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Run map-reduce EM (the loop of :class:`~crowdmed.aggregation.base.EMAggregator`).

    Args:
        model: The model adapter; its estimator receives the fitted parameters.
        map_reduce: ``map_reduce(function, model)`` applies ``function(block, model)`` to every
            partition and returns the key-wise sum of the results.
        callback: Called after every EM iteration as ``callback(iteration, log_likelihood)``.

    Returns:
        ``n_items``, ``n_labels``, ``label_counts``, ``final_stats`` (the statistics of the
        reported posteriors), ``log_likelihoods``, ``n_iter``, ``converged`` and
        ``from_start`` (the reported posteriors are the starting ones: majority vote or
        ``max_iter=0``).
    """
    first = map_reduce(start_pass, model)
    if not first:
        raise ValueError("The label table is empty; it needs one row per annotation.")
    constant = {k: v for k, v in first.items() if k in ("n_items", "n_labels", "label_counts")}
    stats = first
    max_iter = int(getattr(model.estimator, "max_iter", 0)) if model.iterative else 0
    tol = getattr(model.estimator, "tol", 0.0)
    history: list[float] = []
    converged = not model.iterative
    n_iter = 0
    n_labels = int(first["n_labels"])
    if max_iter == 0:
        model.m_step(stats)
    for n_iter in range(1, max_iter + 1):
        model.m_step(stats)
        out = map_reduce(em_pass, model.snapshot())
        history.append(float(out.pop("log_likelihood")) + model.log_param_prior())
        if callback is not None:
            callback(n_iter, history[-1])
        if len(history) > 1 and (history[-1] - history[-2]) / n_labels < tol:
            converged = True
            break
        stats = {**constant, **out}
    if max_iter > 0 and not converged:
        last_gain = (history[-1] - history[-2]) / n_labels if len(history) > 1 else float("nan")
        warnings.warn(
            f"{type(model.estimator).__name__} did not converge in max_iter={max_iter} "
            f"iterations (last gain per label {last_gain:.2e} > tol={tol}). "
            "Increase max_iter or tol.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return {
        **constant,
        "final_stats": first if max_iter == 0 else {**constant, **out},
        "log_likelihoods": history,
        "n_iter": n_iter if max_iter > 0 else 0,
        "converged": converged if max_iter > 0 or not model.iterative else False,
        "from_start": max_iter == 0,
    }


def local_map_reduce(blocks: Sequence[Block]) -> MapReduce:
    """A ``map_reduce`` over blocks held in this process (no scheduler)."""

    def run(function: Callable[..., Stats], *args: Any) -> Stats:
        return add_stats(*(function(block, *args) for block in blocks))

    return run
