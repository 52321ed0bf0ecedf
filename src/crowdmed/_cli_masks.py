"""Commands of the mask consensus and segmentation workflow."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this workflow's commands to the ``crowdmed`` application."""
