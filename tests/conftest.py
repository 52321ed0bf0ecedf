import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real multi-annotator datasets (``CROWDMED_DATA``)."""
    path = Path(os.environ.get("CROWDMED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path}; set CROWDMED_DATA")
    return path


@pytest.fixture
def fields():
    """Three small RGB fields with candidate points and a gold pool (pure NumPy)."""
    rng = np.random.default_rng(0)
    images = {f"img{i}": rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8) for i in range(3)}
    cand = pd.DataFrame(
        {
            "image": np.repeat(list(images), 10),
            "x": rng.integers(0, 80, 30),
            "y": rng.integers(0, 64, 30),
            "score": np.linspace(0.05, 0.95, 30),
        }
    )
    gold = pd.DataFrame(
        {
            "image": ["img0"] * 6 + ["img1"] * 6,
            "x": rng.integers(0, 80, 12),
            "y": rng.integers(0, 64, 12),
            "label": ["mitosis", "not mitosis"] * 6,
        }
    )
    return images, cand, gold
