"""Truth inference on label tables that do not fit on one machine (map-reduce EM on Dask).

:class:`DaskAggregator` fits majority vote, Dawid–Skene, one-coin Dawid–Skene and the ordinal
graded-response model on a Dask DataFrame (e.g. partitioned Parquet) and gives the in-memory
estimators' results. The
per-partition steps and the EM driver live in :mod:`crowdmed.aggregation.distributed._mapreduce`
(NumPy only; its docstring explains how another model plugs in). Dask is optional:
``pip install 'crowdmed[dask]'``; importing this package does not import it.
"""

from crowdmed.aggregation.distributed._dask import (
    DaskAggregator,
    import_dask,
    read_parquet_labels,
)
from crowdmed.aggregation.distributed._mapreduce import (
    MODELS,
    ConfusionModel,
    GradedResponseModel,
    MajorityVoteModel,
    PartitionModel,
)

__all__ = [
    "MODELS",
    "ConfusionModel",
    "DaskAggregator",
    "GradedResponseModel",
    "MajorityVoteModel",
    "PartitionModel",
    "import_dask",
    "read_parquet_labels",
]
