"""Commands of the mitosis detection and the crowd loop (AggNet) workflow."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this workflow's commands to the ``crowdmed`` application."""
