"""Collection rules for the whole tree (tests and doctests in src)."""

import importlib.util

collect_ignore_glob = []
_OPTIONAL = (
    ("torch", "src/crowdmed/nn/*"),
    ("torch", "src/crowdmed/training/*"),
    ("torch", "src/crowdmed/pathology/detector.py"),
    ("torch", "src/crowdmed/pipelines/refine.py"),
    ("matplotlib", "src/crowdmed/report/figures.py"),
    ("matplotlib", "src/crowdmed/report/crowd.py"),
    ("fastapi", "src/crowdmed/crowdsourcing/server/*"),
    ("dask", "src/crowdmed/aggregation/distributed/_dask.py"),
)
for _module, _path in _OPTIONAL:
    if importlib.util.find_spec(_module) is None:
        collect_ignore_glob.append(_path)
