"""Consensus of several readers' boxes: weighted boxes fusion (NumPy and pandas, no torch)."""

from crowdmed.aggregation.detection.box_fusion import estimate_proficiency, fuse_boxes

__all__ = ["estimate_proficiency", "fuse_boxes"]
