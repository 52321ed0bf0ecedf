"""Type aliases used across crowdmed.

The words used here are the ones of ``docs/conventions.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pandas as pd

    from crowdmed.data.labels import CrowdLabels

__all__ = ["ArrayLike", "LabelMatrix", "LabelsLike", "Posteriors", "RandomState"]

#: Integer array of shape ``(n_items, n_annotators)``; classes are ``0..K-1``, ``-1`` marks a
#: missing annotation.
LabelMatrix = npt.NDArray[np.int64]

#: Anything an aggregator accepts: a :class:`~crowdmed.data.CrowdLabels`, a dense label matrix,
#: or a long ``DataFrame`` with ``item, annotator, label`` columns.
LabelsLike = Union["CrowdLabels", npt.ArrayLike, "pd.DataFrame"]

#: Float array of shape ``(n_items, n_classes)``; each row sums to 1.
Posteriors = npt.NDArray[np.float64]

#: Seed, generator, or ``None``.
RandomState = int | np.random.Generator | None

ArrayLike = npt.ArrayLike
