"""Label containers and I/O: COO triplets, the dense view, long/wide tables, bundled data."""

from typing import TYPE_CHECKING

from crowdmed._lazy import lazy_exports

if TYPE_CHECKING:
    from crowdmed.data.boxes import (
        BOX_COLUMNS,
        BOX_COLUMNS_3D,
        box_columns,
        box_iou,
        check_boxes,
        read_boxes,
    )
    from crowdmed.data.datasets import NoduleMasks, list_datasets, load_dataset, load_lidc_masks
    from crowdmed.data.images import list_images, load_images
    from crowdmed.data.io import (
        from_long_frame,
        read_labels,
        read_quiz,
        read_wide,
        to_long,
        to_matrix,
        write_labels,
    )
    from crowdmed.data.labels import MISSING, CrowdLabels
    from crowdmed.data.masks import MaskFile, read_mask, write_mask
    from crowdmed.data.points import check_points, load_field, read_points, write_points
    from crowdmed.data.real import (
        IsicCrowd,
        load_isic_crowd,
        load_tupac_alt_labels,
        load_tupac_alt_table,
    )
    from crowdmed.data.vldb17 import load_vldb17, load_vldb17_table

__all__ = [
    "BOX_COLUMNS",
    "BOX_COLUMNS_3D",
    "MISSING",
    "CrowdLabels",
    "IsicCrowd",
    "MaskFile",
    "NoduleMasks",
    "box_columns",
    "box_iou",
    "check_boxes",
    "check_points",
    "from_long_frame",
    "list_datasets",
    "list_images",
    "load_dataset",
    "load_field",
    "load_images",
    "load_isic_crowd",
    "load_lidc_masks",
    "load_tupac_alt_labels",
    "load_tupac_alt_table",
    "load_vldb17",
    "load_vldb17_table",
    "read_boxes",
    "read_labels",
    "read_mask",
    "read_points",
    "read_quiz",
    "read_wide",
    "to_long",
    "to_matrix",
    "write_labels",
    "write_mask",
    "write_points",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "crowdmed.data.boxes": (
            "BOX_COLUMNS",
            "BOX_COLUMNS_3D",
            "box_columns",
            "box_iou",
            "check_boxes",
            "read_boxes",
        ),
        "crowdmed.data.datasets": (
            "NoduleMasks",
            "list_datasets",
            "load_dataset",
            "load_lidc_masks",
        ),
        "crowdmed.data.images": (
            "list_images",
            "load_images",
        ),
        "crowdmed.data.io": (
            "from_long_frame",
            "read_labels",
            "read_quiz",
            "read_wide",
            "to_long",
            "to_matrix",
            "write_labels",
        ),
        "crowdmed.data.labels": (
            "MISSING",
            "CrowdLabels",
        ),
        "crowdmed.data.masks": (
            "MaskFile",
            "read_mask",
            "write_mask",
        ),
        "crowdmed.data.points": (
            "check_points",
            "load_field",
            "read_points",
            "write_points",
        ),
        "crowdmed.data.real": (
            "IsicCrowd",
            "load_isic_crowd",
            "load_tupac_alt_labels",
            "load_tupac_alt_table",
        ),
        "crowdmed.data.vldb17": (
            "load_vldb17",
            "load_vldb17_table",
        ),
    },
    globals(),
)
