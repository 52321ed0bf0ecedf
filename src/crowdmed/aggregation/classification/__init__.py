"""Truth inference for classification labels."""

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
