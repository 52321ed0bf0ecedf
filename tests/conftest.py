import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real multi-annotator datasets (``CROWDMED_DATA``)."""
    path = Path(os.environ.get("CROWDMED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path}; set CROWDMED_DATA")
    return path
