"""Consensus of several raters' segmentation masks: voting, soft masks and STAPLE (NumPy).

One case is an array of shape ``(n_raters, *spatial)`` (2-D or 3-D): ``bool`` masks for binary
consensus, ``int`` label maps (``-1`` = not annotated) for multi-label consensus.
"""

from crowdmed.segmentation.consensus import (
    label_frequencies,
    majority_vote_labels,
    majority_vote_masks,
    mean_masks,
)
from crowdmed.segmentation.staple import STAPLE, MultiLabelSTAPLE

__all__ = [
    "STAPLE",
    "MultiLabelSTAPLE",
    "label_frequencies",
    "majority_vote_labels",
    "majority_vote_masks",
    "mean_masks",
]
