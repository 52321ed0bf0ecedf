"""Command-line interface: a thin shell over the library (typer + rich).

Each command parses its arguments, calls one library function and writes files atomically.
User errors (a bad value, a missing file or column, a missing optional extra) print one line
``Error: <message>`` on stderr and exit with code 2; ``crowdmed --debug ...`` shows the
traceback instead. Progress displays, warnings and summaries go to stderr, so stdout stays
clean; ``demo`` prints its plain-text summary on stdout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from crowdmed._version import __version__
from crowdmed.cli import boxes as _boxes
from crowdmed.cli import crowd as _crowd
from crowdmed.cli import masks as _masks
from crowdmed.cli import mitosis as _mitosis
from crowdmed.cli import next as _next
from crowdmed.cli import report as _report
from crowdmed.cli import serve as _serve
from crowdmed.cli._common import EXIT_USER_ERROR, USER_ERRORS, _State
from crowdmed.cli.aggregate import aggregate, demo
from crowdmed.cli.predict import predict
from crowdmed.cli.train_classify import classify
from crowdmed.cli.train_detect import detect
from crowdmed.cli.train_segment import segment

__all__ = ["EXIT_USER_ERROR", "USER_ERRORS", "app", "main"]

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 80}

app = typer.Typer(
    name="crowdmed",
    help="Truth inference and annotator reliability from the labels of many annotators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings=_SETTINGS,
)

train_app = typer.Typer(
    name="train",
    help="Train a network on the labels of many annotators: classify, segment or detect.",
    no_args_is_help=True,
    context_settings=_SETTINGS,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"crowdmed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the full traceback of an error."),
    ] = False,
) -> None:
    """Truth inference and annotator reliability from the labels of many annotators.

    Errors print one line on stderr and exit with code 2; add --debug for the traceback.
    """
    ctx.obj = _State(debug=debug)


app.command()(aggregate)
app.command()(demo)
train_app.command("classify")(classify)
train_app.command("segment")(segment)
train_app.command("detect")(detect)
app.add_typer(train_app, name="train")
app.command()(predict)
for _module in (_masks, _boxes, _mitosis, _crowd, _serve, _next, _report):
    _module.register(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``crowdmed`` console script and ``python -m crowdmed``."""
    app(args=None if argv is None else list(argv), prog_name="crowdmed")
