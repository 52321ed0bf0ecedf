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

# In CI every Hypothesis test draws the same examples on every run (reproducible failures);
# locally the examples vary from run to run and can find new cases.
if importlib.util.find_spec("hypothesis") is not None:
    import os

    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, deadline=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")
