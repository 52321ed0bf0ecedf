"""A memory check before work whose size is derived from several options.

An option range (see ``crowdmed.cli._options``) bounds each value; their product (images x
side x side x channels) can still exceed the machine. :func:`check_memory` refuses such work
with one line before anything is allocated.
"""

from __future__ import annotations

import os

__all__ = ["available_memory", "check_memory"]


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable``), or ``None``."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(n_bytes: float, what: str, fix: str) -> None:
    """Refuse, before any work, a derived size that needs more memory than is available.

    Args:
        n_bytes: Estimated bytes the work holds at once.
        what: What is that large, e.g. ``"20 fields of 100000 x 100000 pixels"``.
        fix: How to make it smaller, e.g. ``"lower --size or --n-images"``.

    Raises:
        ValueError: One line with the estimate and the memory available.

    Examples:
        >>> check_memory(1024, "a small array", "nothing to do")
    """
    free = available_memory()
    if free is not None and n_bytes > free:
        raise ValueError(
            f"{what} need about {n_bytes / 2**30:.1f} GiB of memory but only "
            f"{free / 2**30:.1f} GiB are available; {fix}."
        )
