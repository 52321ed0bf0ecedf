"""Label containers and I/O: COO triplets, the dense view, long/wide tables, bundled data."""

from crowdmed.data.datasets import list_datasets, load_dataset
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

__all__ = [
    "MISSING",
    "CrowdLabels",
    "from_long_frame",
    "list_datasets",
    "load_dataset",
    "read_labels",
    "read_quiz",
    "read_wide",
    "to_long",
    "to_matrix",
    "write_labels",
]
