"""Label containers and I/O: COO triplets, the dense view, long/wide tables, bundled data."""

from crowdmed.data.datasets import NoduleMasks, list_datasets, load_dataset, load_lidc_masks
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
from crowdmed.data.real import (
    IsicCrowd,
    load_isic_crowd,
    load_tupac_alt_labels,
    load_tupac_alt_table,
)

__all__ = [
    "MISSING",
    "CrowdLabels",
    "IsicCrowd",
    "NoduleMasks",
    "from_long_frame",
    "list_datasets",
    "load_dataset",
    "load_isic_crowd",
    "load_lidc_masks",
    "load_tupac_alt_labels",
    "load_tupac_alt_table",
    "read_labels",
    "read_quiz",
    "read_wide",
    "to_long",
    "to_matrix",
    "write_labels",
]
