"""The ``crowdmed`` command line: thin typer shells over the library (one module per group)."""

from crowdmed.cli.root import app, main

__all__ = ["app", "main"]
