"""Crowdsourcing: task packages out, crowd votes in (NumPy, pandas, Pillow).

- :func:`export_tasks` turns candidate detections into a task package (context crops, their
  blue-ratio view, gold questions, a Label Studio project);
- :func:`read_votes` imports the votes (CSV or Label Studio JSON) as
  :class:`~crowdmed.CrowdLabels` with each annotator's quiz accuracy from the gold tasks;

The refinement of a detector with AggNet's aggregation layer is
:func:`crowdmed.pipelines.refine.refine` (torch), and
:func:`crowdmed.pipelines.aggnet_loop.run_crowd_loop` runs the whole synthetic loop (votes
drawn by :func:`crowdmed.simulate.simulate_votes`).
"""

from crowdmed.crowdsourcing.labelstudio import (
    labeling_config,
    read_label_studio,
    write_label_studio,
)
from crowdmed.crowdsourcing.tasks import (
    CLASS_NAMES,
    TaskPackage,
    export_tasks,
    load_package,
    parse_label,
)
from crowdmed.crowdsourcing.views import blue_ratio, blue_ratio_display, context_crop, context_crops
from crowdmed.crowdsourcing.votes import ImportedVotes, read_votes

__all__ = [
    "CLASS_NAMES",
    "ImportedVotes",
    "TaskPackage",
    "blue_ratio",
    "blue_ratio_display",
    "context_crop",
    "context_crops",
    "export_tasks",
    "labeling_config",
    "load_package",
    "parse_label",
    "read_label_studio",
    "read_votes",
    "write_label_studio",
]
