"""Truth inference for continuous labels (measurements, scores).

Readings are a float array of shape ``(n_items, n_annotators)`` with ``NaN`` for a missing
reading, or a long table ``item, annotator, label`` (see docs/conventions.md). ``labels_`` is
the consensus value of each item.
"""

from crowdmed.aggregation.continuous.base import (
    BaseContinuousAggregator,
    ContinuousLabels,
    check_continuous,
)
from crowdmed.aggregation.continuous.baselines import ContinuousMean, ContinuousMedian
from crowdmed.aggregation.continuous.raykar import RaykarRegression, ScaleBiasRegression

__all__ = [
    "BaseContinuousAggregator",
    "ContinuousLabels",
    "ContinuousMean",
    "ContinuousMedian",
    "RaykarRegression",
    "ScaleBiasRegression",
    "check_continuous",
]
