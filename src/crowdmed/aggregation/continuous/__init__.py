"""Truth inference for continuous labels (measurements, scores).

Readings are a float array of shape ``(n_items, n_annotators)`` with ``NaN`` for a missing
reading, or a long table ``item, annotator, label`` (see docs/conventions.md). ``labels_`` is
the consensus value of each item.
"""

from enum import Enum

from crowdmed.aggregation.continuous.base import (
    BaseContinuousAggregator,
    ContinuousLabels,
    check_continuous,
)
from crowdmed.aggregation.continuous.baselines import ContinuousMean, ContinuousMedian
from crowdmed.aggregation.continuous.raykar import RaykarRegression, ScaleBiasRegression

__all__ = [
    "CONTINUOUS_METHODS",
    "BaseContinuousAggregator",
    "ContinuousLabels",
    "ContinuousMean",
    "ContinuousMedian",
    "ContinuousMethod",
    "RaykarRegression",
    "ScaleBiasRegression",
    "check_continuous",
]


class ContinuousMethod(str, Enum):
    """Names of the continuous aggregators (as a command line would use them)."""

    MEAN = "mean"
    MEDIAN = "median"
    RAYKAR = "raykar"
    SCALE_BIAS = "scale-bias"


CONTINUOUS_METHODS: dict[ContinuousMethod, type[BaseContinuousAggregator]] = {
    ContinuousMethod.MEAN: ContinuousMean,
    ContinuousMethod.MEDIAN: ContinuousMedian,
    ContinuousMethod.RAYKAR: RaykarRegression,
    ContinuousMethod.SCALE_BIAS: ScaleBiasRegression,
}
