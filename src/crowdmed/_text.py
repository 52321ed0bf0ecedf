"""Short text for error messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["short_list"]


def short_list(values: Sequence[Any] | np.ndarray, limit: int = 5) -> str:
    """The first ``limit`` values as a list, then ``" and N more"`` (NumPy scalars as Python)."""
    vals = [v.item() if isinstance(v, np.generic) else v for v in list(values)[:limit]]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"{vals}{more}"
