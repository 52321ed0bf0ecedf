"""Truth inference: consensus labels and annotator parameters from disagreeing labels.

NumPy/SciPy only; importing this package never imports torch.
"""

from enum import Enum
from typing import TYPE_CHECKING, Any

from crowdmed._lazy import lazy_exports

if TYPE_CHECKING:
    from crowdmed.aggregation.base import BaseAggregator, argmax_ties
    from crowdmed.aggregation.classification import (
        BCC,
        GLAD,
        KOS,
        MACE,
        MMSR,
        AutoAggregator,
        BinarySensSpec,
        DawidSkene,
        GoldMajorityVote,
        MajorityVote,
        OneCoinDawidSkene,
        WeightedMajorityVote,
        ZeroBasedSkill,
    )
    from crowdmed.aggregation.continuous import (
        CONTINUOUS_METHODS,
        ContinuousMean,
        ContinuousMedian,
        ContinuousMethod,
        RaykarRegression,
        ScaleBiasRegression,
    )
    from crowdmed.aggregation.detection import estimate_proficiency, fuse_boxes
    from crowdmed.aggregation.ordinal import (
        ORDINAL_METHODS,
        GradedResponse,
        MedianVote,
        OrdinalMajorityVote,
        OrdinalMethod,
    )
    from crowdmed.aggregation.segmentation import (
        STAPLE,
        MultiLabelSTAPLE,
        label_frequencies,
        majority_vote_labels,
        majority_vote_masks,
        mean_masks,
    )

__all__ = [
    "BCC",
    "CONTINUOUS_METHODS",
    "GLAD",
    "KOS",
    "MACE",
    "METHODS",
    "MMSR",
    "ORDINAL_METHODS",
    "STAPLE",
    "AutoAggregator",
    "BaseAggregator",
    "BinarySensSpec",
    "ContinuousMean",
    "ContinuousMedian",
    "ContinuousMethod",
    "DawidSkene",
    "GoldMajorityVote",
    "GradedResponse",
    "MajorityVote",
    "MedianVote",
    "Method",
    "MultiLabelSTAPLE",
    "OneCoinDawidSkene",
    "OrdinalMajorityVote",
    "OrdinalMethod",
    "RaykarRegression",
    "ScaleBiasRegression",
    "WeightedMajorityVote",
    "ZeroBasedSkill",
    "argmax_ties",
    "estimate_proficiency",
    "fuse_boxes",
    "label_frequencies",
    "majority_vote_labels",
    "majority_vote_masks",
    "make_aggregator",
    "mean_masks",
]


class Method(str, Enum):
    """Names of the classification aggregators (as used by the CLI)."""

    MAJORITY_VOTE = "majority-vote"
    WAWA = "wawa"
    DAWID_SKENE = "dawid-skene"
    ONE_COIN = "one-coin"
    GLAD = "glad"
    SENS_SPEC = "sens-spec"
    KOS = "kos"
    ZERO_BASED_SKILL = "zero-based-skill"
    GOLD_MAJORITY_VOTE = "gold-majority-vote"
    MACE = "mace"
    BCC = "bcc"
    MMSR = "mmsr"


#: Class name of the aggregator of each :class:`Method` (``METHODS`` maps to the classes).
_METHOD_CLASSES = {
    Method.MAJORITY_VOTE: "MajorityVote",
    Method.WAWA: "WeightedMajorityVote",
    Method.DAWID_SKENE: "DawidSkene",
    Method.ONE_COIN: "OneCoinDawidSkene",
    Method.GLAD: "GLAD",
    Method.SENS_SPEC: "BinarySensSpec",
    Method.KOS: "KOS",
    Method.ZERO_BASED_SKILL: "ZeroBasedSkill",
    Method.GOLD_MAJORITY_VOTE: "GoldMajorityVote",
    Method.MACE: "MACE",
    Method.BCC: "BCC",
    Method.MMSR: "MMSR",
}

_CLASSIFICATION = "crowdmed.aggregation.classification"
_lazy_getattr, __dir__ = lazy_exports(
    __name__,
    {
        "crowdmed.aggregation.base": ("BaseAggregator", "argmax_ties"),
        _CLASSIFICATION: (
            "BCC",
            "GLAD",
            "KOS",
            "MACE",
            "MMSR",
            "AutoAggregator",
            "BinarySensSpec",
            "DawidSkene",
            "GoldMajorityVote",
            "MajorityVote",
            "OneCoinDawidSkene",
            "WeightedMajorityVote",
            "ZeroBasedSkill",
        ),
        "crowdmed.aggregation.continuous": (
            "CONTINUOUS_METHODS",
            "ContinuousMean",
            "ContinuousMedian",
            "ContinuousMethod",
            "RaykarRegression",
            "ScaleBiasRegression",
        ),
        "crowdmed.aggregation.detection": ("estimate_proficiency", "fuse_boxes"),
        "crowdmed.aggregation.ordinal": (
            "ORDINAL_METHODS",
            "GradedResponse",
            "MedianVote",
            "OrdinalMajorityVote",
            "OrdinalMethod",
        ),
        "crowdmed.aggregation.segmentation": (
            "STAPLE",
            "MultiLabelSTAPLE",
            "label_frequencies",
            "majority_vote_labels",
            "majority_vote_masks",
            "mean_masks",
        ),
    },
    globals(),
)


def _method_class(method: Method) -> "type[BaseAggregator]":
    """The aggregator class of ``method``, importing only its module."""
    return _lazy_getattr(_METHOD_CLASSES[method])  # type: ignore[no-any-return]


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # every class: built on first use
        methods = {m: _method_class(m) for m in Method}
        globals()["METHODS"] = methods
        return methods
    return _lazy_getattr(name)


def make_aggregator(method: "str | Method", **params: object) -> "BaseAggregator":
    """Build an aggregator from its CLI name.

    Args:
        method: A name of :class:`Method`: ``majority-vote, wawa, dawid-skene, one-coin,
            glad, sens-spec, kos, zero-based-skill, gold-majority-vote, mace, bcc, mmsr``; or
            ``auto``, an :class:`AutoAggregator` that chooses among them by cross-validation
            over annotations.
        **params: Hyperparameters of that aggregator.

    Returns:
        The unfitted aggregator.

    Examples:
        >>> make_aggregator("dawid-skene", max_iter=10)
        DawidSkene(max_iter=10)
    """
    from crowdmed._validation import check_option

    if method == "auto":
        return _lazy_getattr("AutoAggregator")().set_params(**params)
    m = check_option(method, Method, "method")
    return _method_class(m)().set_params(**params)
