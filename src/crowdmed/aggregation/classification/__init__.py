"""Truth inference for classification labels."""

from typing import TYPE_CHECKING

from crowdmed._lazy import lazy_exports

if TYPE_CHECKING:
    from crowdmed.aggregation.classification.auto import AutoAggregator
    from crowdmed.aggregation.classification.bcc import BCC
    from crowdmed.aggregation.classification.dawid_skene import DawidSkene, OneCoinDawidSkene
    from crowdmed.aggregation.classification.glad import GLAD
    from crowdmed.aggregation.classification.gold_majority_vote import GoldMajorityVote
    from crowdmed.aggregation.classification.kos import KOS
    from crowdmed.aggregation.classification.mace import MACE
    from crowdmed.aggregation.classification.majority_vote import MajorityVote, WeightedMajorityVote
    from crowdmed.aggregation.classification.mmsr import MMSR
    from crowdmed.aggregation.classification.sens_spec import BinarySensSpec
    from crowdmed.aggregation.classification.zero_based_skill import ZeroBasedSkill

__all__ = [
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
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "crowdmed.aggregation.classification.auto": ("AutoAggregator",),
        "crowdmed.aggregation.classification.bcc": ("BCC",),
        "crowdmed.aggregation.classification.dawid_skene": (
            "DawidSkene",
            "OneCoinDawidSkene",
        ),
        "crowdmed.aggregation.classification.glad": ("GLAD",),
        "crowdmed.aggregation.classification.gold_majority_vote": ("GoldMajorityVote",),
        "crowdmed.aggregation.classification.kos": ("KOS",),
        "crowdmed.aggregation.classification.mace": ("MACE",),
        "crowdmed.aggregation.classification.majority_vote": (
            "MajorityVote",
            "WeightedMajorityVote",
        ),
        "crowdmed.aggregation.classification.mmsr": ("MMSR",),
        "crowdmed.aggregation.classification.sens_spec": ("BinarySensSpec",),
        "crowdmed.aggregation.classification.zero_based_skill": ("ZeroBasedSkill",),
    },
    globals(),
)
