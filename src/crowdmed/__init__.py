"""crowdmed: learning from many annotators in medical image analysis.

Truth inference (consensus labels with calibrated confidence), annotator reliability, and deep
models trained on the raw labels of several annotators.
"""

from crowdmed._version import __version__
from crowdmed.aggregation import (
    GLAD,
    BinarySensSpec,
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    WeightedMajorityVote,
)
from crowdmed.data import MISSING, CrowdLabels, read_labels

__all__ = [
    "GLAD",
    "MISSING",
    "BinarySensSpec",
    "CrowdLabels",
    "DawidSkene",
    "MajorityVote",
    "OneCoinDawidSkene",
    "WeightedMajorityVote",
    "__version__",
    "read_labels",
]
