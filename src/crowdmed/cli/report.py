"""``crowdmed report FOLDER``: a shell over :func:`crowdmed.pipelines.report.build_report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crowdmed.cli._common import _staged_outputs, _stderr, _user_errors

__all__ = ["register", "report"]

FolderArg = Annotated[
    Path,
    typer.Argument(
        help="Output folder of crowdmed aggregate, masks consensus or boxes fuse (their "
        "<output>.json run records are found in it and its sub-folders).",
        show_default=False,
        metavar="FOLDER",
    ),
]
ReportOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="The HTML report (one self-contained file); FOLDER/report.html when omitted.",
        show_default=False,
    ),
]


def report(ctx: typer.Context, folder: FolderArg, out: ReportOutOpt = None) -> None:
    """Write a report of an output folder: summary first, figures, tables, links to files.

    Example: crowdmed report results/ --out results/report.html
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.pipelines.report import build_report

        path = folder / "report.html" if out is None else out
        if path.is_dir():
            raise ValueError(f"`--out` must be an HTML file; '{path}' is a folder.")
        result = build_report(folder, link_base=path.parent)
        with _staged_outputs() as stage:
            stage(path).write_text(result.html(), encoding="utf-8")
    console.print(result.summary, soft_wrap=True, highlight=False, markup=False)
    typer.echo(f"Report: {path}")


def register(app: typer.Typer) -> None:
    """Add ``crowdmed report`` to the ``crowdmed`` application."""
    app.command("report")(report)
