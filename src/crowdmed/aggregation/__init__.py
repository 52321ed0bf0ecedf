"""Truth inference: consensus labels and annotator parameters from disagreeing labels.

NumPy/SciPy only; importing this package never imports torch.
"""

from enum import Enum

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


METHODS: dict[Method, type[BaseAggregator]] = {
    Method.MAJORITY_VOTE: MajorityVote,
    Method.WAWA: WeightedMajorityVote,
    Method.DAWID_SKENE: DawidSkene,
    Method.ONE_COIN: OneCoinDawidSkene,
    Method.GLAD: GLAD,
    Method.SENS_SPEC: BinarySensSpec,
    Method.KOS: KOS,
    Method.ZERO_BASED_SKILL: ZeroBasedSkill,
    Method.GOLD_MAJORITY_VOTE: GoldMajorityVote,
    Method.MACE: MACE,
    Method.BCC: BCC,
    Method.MMSR: MMSR,
}


def make_aggregator(method: "str | Method", **params: object) -> BaseAggregator:
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
        return AutoAggregator().set_params(**params)
    m = check_option(method, Method, "method")
    return METHODS[m]().set_params(**params)
