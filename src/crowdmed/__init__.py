"""crowdmed: learning from many annotators in medical image analysis.

Truth inference (consensus labels with calibrated confidence), annotator reliability, and deep
models trained on the raw labels of several annotators.

The names below load on first use, so ``import crowdmed`` (and the command line) imports only
what it needs.
"""

from typing import TYPE_CHECKING

from crowdmed._lazy import lazy_exports
from crowdmed._version import __version__

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "crowdmed.aggregation": (
            "GLAD",
            "BinarySensSpec",
            "DawidSkene",
            "MajorityVote",
            "OneCoinDawidSkene",
            "WeightedMajorityVote",
        ),
        "crowdmed.data": ("MISSING", "CrowdLabels", "read_labels"),
    },
    globals(),
)
