"""Boxes of several readers: reading and validation, consensus fusion, reader agreement.

NumPy and pandas only (no torch): the detector training that learns from the fused boxes lives
with the torch extras.
"""

from crowdmed.detection.agreement import match_boxes, pairwise_reader_f1, reader_agreement
from crowdmed.detection.boxes import (
    BOX_COLUMNS,
    BOX_COLUMNS_3D,
    box_columns,
    box_iou,
    check_boxes,
    read_boxes,
)
from crowdmed.detection.fusion import estimate_proficiency, fuse_boxes

__all__ = [
    "BOX_COLUMNS",
    "BOX_COLUMNS_3D",
    "box_columns",
    "box_iou",
    "check_boxes",
    "estimate_proficiency",
    "fuse_boxes",
    "match_boxes",
    "pairwise_reader_f1",
    "read_boxes",
    "reader_agreement",
]
