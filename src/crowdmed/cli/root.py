"""Command-line interface: a thin shell over the library (typer + rich).

Each command parses its arguments, calls one library function and writes files atomically.
User errors (a bad value, a missing file or column, a missing optional extra) print one line
``Error: <message>`` on stderr and exit with code 2; ``crowdmed --debug ...`` shows the
traceback instead. Progress displays, warnings and summaries go to stderr, so stdout stays
clean; ``demo`` prints its plain-text summary on stdout.

Commands load lazily: the root table below names the module of each command and keeps its
one-line help, so ``crowdmed aggregate`` imports only ``crowdmed.cli.aggregate`` and
``crowdmed --help`` lists every command without importing any of them.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Annotated, Any, ClassVar, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from crowdmed._version import __version__
from crowdmed.cli._common import EXIT_USER_ERROR, USER_ERRORS, _State

__all__ = ["COMMANDS", "EXIT_USER_ERROR", "TRAIN_COMMANDS", "USER_ERRORS", "app", "main"]

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 80}


class CommandSpec(NamedTuple):
    """Where a command lives and its one-line help (the first paragraph of its docstring).

    ``attr`` is the command function, or ``"register"`` for a module whose ``register(app)``
    adds the command (a group such as ``masks``, or ``refine``).
    """

    module: str
    attr: str
    help: str


#: The commands of ``crowdmed``, in the order ``crowdmed --help`` lists them.
COMMANDS: dict[str, CommandSpec] = {
    "aggregate": CommandSpec(
        "crowdmed.cli.aggregate",
        "aggregate",
        "Infer consensus labels and annotator reliability from a label file.",
    ),
    "demo": CommandSpec(
        "crowdmed.cli.aggregate",
        "demo",
        "Run the demo on bundled real data (and the synthetic crowd loop); write a report.",
    ),
    "predict": CommandSpec(
        "crowdmed.cli.predict",
        "predict",
        "Predict with a model trained by `crowdmed train` (any task).",
    ),
    "refine": CommandSpec(
        "crowdmed.cli.crowd",
        "register",
        "Refine the detector's 0.33-scale network on crowd votes (AggNet's aggregation layer).",
    ),
    "next": CommandSpec(
        "crowdmed.cli.next",
        "register",
        "Rank items by how much one more annotation would improve their consensus.",
    ),
    "report": CommandSpec(
        "crowdmed.cli.report",
        "register",
        "Write a report of an output folder: summary first, figures, tables, links to files.",
    ),
    "train": CommandSpec(
        "crowdmed.cli.root",
        "train_app",
        "Train a network on the labels of many annotators: classify, segment or detect.",
    ),
    "masks": CommandSpec(
        "crowdmed.cli.masks",
        "register",
        "Consensus of several raters' segmentation masks (STAPLE, voting, soft masks).",
    ),
    "boxes": CommandSpec(
        "crowdmed.cli.boxes",
        "register",
        "Consensus of several readers' bounding boxes and the readers' agreement.",
    ),
    "mitosis": CommandSpec(
        "crowdmed.cli.mitosis",
        "register",
        "Mitosis detection in H&E high-power fields (AggNet): synthesize, train, detect, evaluate.",
    ),
    "crowd": CommandSpec(
        "crowdmed.cli.crowd",
        "register",
        "The crowdsourcing loop: export patch-labelling tasks, simulate or import votes.",
    ),
    "serve": CommandSpec(
        "crowdmed.cli.serve",
        "register",
        "The annotation server: reader studies and crowds with a quiz, hidden gold and a live "
        "consensus (needs the serve extra). Example: crowdmed serve init study/ --images "
        "cases/ --classes normal,abnormal; crowdmed serve invite study/ ann1 ann2; crowdmed "
        "serve study/ --port 8000; crowdmed serve export study/ --out votes.csv",
    ),
}

#: The commands of ``crowdmed train``.
TRAIN_COMMANDS: dict[str, CommandSpec] = {
    "classify": CommandSpec(
        "crowdmed.cli.train_classify",
        "classify",
        "Train a classifier on the labels of many annotators.",
    ),
    "segment": CommandSpec(
        "crowdmed.cli.train_segment",
        "segment",
        "Train a segmentation network on the masks of several raters.",
    ),
    "detect": CommandSpec(
        "crowdmed.cli.train_detect",
        "detect",
        "Train a detector on the boxes of several readers.",
    ),
}


def load_command(name: str, spec: CommandSpec) -> Any:
    """Import the module of a command and build its click command."""
    module = importlib.import_module(spec.module)
    target = getattr(module, spec.attr)
    if isinstance(target, typer.Typer):  # a group defined here (train)
        return typer.main.get_group(target)
    holder = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    if spec.attr == "register":
        target(holder)
    else:
        holder.command(name)(target)
    return typer.main.get_group(holder).commands[name]


class _LazyCommands(MutableMapping[str, Any]):
    """Command name -> click command, importing a command's module on first access."""

    def __init__(self, specs: dict[str, CommandSpec], loaded: dict[str, Any]) -> None:
        self.specs = specs
        self.loaded = dict(loaded)
        self.order = list(specs) + [n for n in loaded if n not in specs]

    def __getitem__(self, name: str) -> Any:
        if name not in self.loaded:
            self.loaded[name] = load_command(name, self.specs[name])
        return self.loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        if name not in self.order:
            self.order.append(name)
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self.order:
            raise KeyError(name)
        self.order.remove(name)
        self.loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.order))

    def __len__(self) -> int:
        return len(self.order)

    def __contains__(self, name: object) -> bool:
        return name in self.order


class LazyGroup(TyperGroup):
    """A command group whose commands are imported only when invoked.

    While it writes its help, not-yet-loaded commands are stand-ins that carry the one-line
    help of the table, so ``--help`` imports none of them.
    """

    specs: ClassVar[dict[str, CommandSpec]] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = _LazyCommands(self.specs, dict(self.commands))
        self._writing_help = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        commands = self.commands
        if (
            self._writing_help
            and isinstance(commands, _LazyCommands)
            and cmd_name in commands.specs
            and cmd_name not in commands.loaded
        ):
            return TyperCommand(name=cmd_name, help=commands.specs[cmd_name].help)
        return commands.get(cmd_name)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._writing_help = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._writing_help = False


class _RootGroup(LazyGroup):
    specs = COMMANDS


class _TrainGroup(LazyGroup):
    specs = TRAIN_COMMANDS


app = typer.Typer(
    name="crowdmed",
    cls=_RootGroup,
    help="Truth inference and annotator reliability from the labels of many annotators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings=_SETTINGS,
)

train_app = typer.Typer(
    name="train",
    cls=_TrainGroup,
    help=COMMANDS["train"].help,
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


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``crowdmed`` console script and ``python -m crowdmed``.

    Without ``argv`` (the console script) the process lives for one command, so the objects
    alive when it starts (the imported modules) and when it ends are frozen out of the garbage
    collector: its passes during the command, and its last one at exit, do not walk them
    all (a few tenths of a second on a large table). Objects the command creates are
    collected as usual.
    """
    if argv is None:
        gc.freeze()
    try:
        app(args=None if argv is None else list(argv), prog_name="crowdmed")
    finally:
        if argv is None:
            gc.freeze()
