"""Consensus of several raters' segmentation masks: voting, soft masks and STAPLE (NumPy).

One case is an array of shape ``(n_raters, *spatial)`` (2-D or 3-D): ``bool`` masks for binary
consensus, ``int`` label maps (``-1`` = not annotated) for multi-label consensus.
"""

from crowdmed.aggregation.segmentation.staple import STAPLE, MultiLabelSTAPLE
from crowdmed.aggregation.segmentation.votes import (
    label_frequencies,
    majority_vote_labels,
    majority_vote_masks,
    mean_masks,
)

__all__ = [
    "STAPLE",
    "MultiLabelSTAPLE",
    "label_frequencies",
    "majority_vote_labels",
    "majority_vote_masks",
    "mean_masks",
]
