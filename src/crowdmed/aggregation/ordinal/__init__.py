"""Truth inference for ordinal labels (grades such as LIDC malignancy 1-5, BI-RADS, Gleason).

Classes ``0..K-1`` are taken in the order of ``classes``. The estimators accept the same inputs
as the classification aggregators (a :class:`~crowdmed.data.CrowdLabels`, a dense integer
array with ``-1`` for a missing annotation, or a long ``DataFrame``).
"""

from enum import Enum

from crowdmed.aggregation.base import BaseAggregator
from crowdmed.aggregation.ordinal.baselines import MedianVote, OrdinalMajorityVote, item_medians
from crowdmed.aggregation.ordinal.graded_response import (
    ClassPrior,
    GradedResponse,
    Link,
    Locations,
    ordinal_confusion,
)

__all__ = [
    "ORDINAL_METHODS",
    "ClassPrior",
    "GradedResponse",
    "Link",
    "Locations",
    "MedianVote",
    "OrdinalMajorityVote",
    "OrdinalMethod",
    "item_medians",
    "ordinal_confusion",
]


class OrdinalMethod(str, Enum):
    """Names of the ordinal aggregators (as a command line would use them)."""

    GRADED_RESPONSE = "graded-response"
    MEDIAN = "median"
    ORDINAL_MAJORITY_VOTE = "ordinal-majority-vote"


ORDINAL_METHODS: dict[OrdinalMethod, type[BaseAggregator]] = {
    OrdinalMethod.GRADED_RESPONSE: GradedResponse,
    OrdinalMethod.MEDIAN: MedianVote,
    OrdinalMethod.ORDINAL_MAJORITY_VOTE: OrdinalMajorityVote,
}
