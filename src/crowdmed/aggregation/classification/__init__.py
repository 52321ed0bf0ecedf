"""Truth inference for classification labels."""

from crowdmed.aggregation.classification.dawid_skene import DawidSkene, OneCoinDawidSkene
from crowdmed.aggregation.classification.glad import GLAD
from crowdmed.aggregation.classification.majority_vote import MajorityVote, WeightedMajorityVote
from crowdmed.aggregation.classification.sens_spec import BinarySensSpec

__all__ = [
    "GLAD",
    "BinarySensSpec",
    "DawidSkene",
    "MajorityVote",
    "OneCoinDawidSkene",
    "WeightedMajorityVote",
]
