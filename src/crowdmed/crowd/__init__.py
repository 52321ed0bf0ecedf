"""The crowdsourcing loop: task packages out, crowd votes in (NumPy, pandas, Pillow).

- :func:`export_tasks` turns candidate detections into a task package (context crops, their
  blue-ratio view, gold questions, a Label Studio project);
- :func:`read_votes` imports the votes (CSV or Label Studio JSON) as
  :class:`~crowdmed.CrowdLabels` with each annotator's quiz accuracy from the gold tasks;
- :func:`simulate_votes` draws votes of a synthetic crowd with spammers.

The refinement of a detector with AggNet's aggregation layer is
:func:`crowdmed.mitosis.refine.refine` (torch), and :func:`crowdmed.crowd.loop.run_crowd_loop`
runs the whole synthetic loop.
"""

from crowdmed.crowd.labelstudio import labeling_config, read_label_studio, write_label_studio
from crowdmed.crowd.simulate import SimulatedVotes, simulate_votes
from crowdmed.crowd.tasks import (
    CLASS_NAMES,
    TaskPackage,
    export_tasks,
    load_package,
    parse_label,
)
from crowdmed.crowd.views import blue_ratio, blue_ratio_display, context_crop, context_crops
from crowdmed.crowd.votes import ImportedVotes, read_votes

__all__ = [
    "CLASS_NAMES",
    "ImportedVotes",
    "SimulatedVotes",
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
    "simulate_votes",
    "write_label_studio",
]
