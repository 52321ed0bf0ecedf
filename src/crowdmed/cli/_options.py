"""Option declarations shared by several commands, each declared once as a typed alias.

A command writes ``seed: SeedOpt = 0``: the option's name, help and metavar come from here;
its default stays in the command's signature (and so in its ``--help``).

Every numeric option has a range, checked while the command line is parsed, before any
work: :func:`number_option` declares one (its help ends with the range), and a value out of
range, NaN or infinite prints one line ``Error: `--lr` must be ...; got ...`` and exits with
code 2. The ranges keep every command within what a machine can do (an image side of
100000 pixels is refused here, not by the kernel's out-of-memory killer); sizes derived from
several options are checked against the free memory by the pipelines
(:func:`crowdmed.pipelines.memory.check_memory`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "MAX_SEED",
    "AnnotatorColOpt",
    "BatchSizeOpt",
    "ChannelsOpt",
    "EpochsOpt",
    "ImageSizeOpt",
    "ImagesOpt",
    "ItemColOpt",
    "JsonOpt",
    "LabelClassesOpt",
    "LabelColOpt",
    "LrOpt",
    "MaybeImagesOpt",
    "ModelDirOpt",
    "OnDuplicateOpt",
    "PatienceOpt",
    "PredictOpt",
    "ResumeOpt",
    "SeedOpt",
    "in_range",
    "number_option",
]

#: Largest seed (NumPy and torch both take 0 .. 2**32 - 1 everywhere).
MAX_SEED = 2**32 - 1


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(
    lo: float | None, hi: float | None, lo_open: bool, hi_open: bool, choices: tuple[int, ...]
) -> str:
    if choices:
        return " or ".join(str(c) for c in choices)
    if lo is not None and hi is not None and not lo_open and not hi_open:
        return f"from {_fmt(lo)} to {_fmt(hi)}"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {_fmt(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {_fmt(hi)}")
    return " and ".join(parts)


def _range_text(
    lo: float | None,
    hi: float | None,
    integer: bool,
    lo_open: bool,
    hi_open: bool,
    choices: tuple[int, ...],
) -> str:
    if choices:
        return " or ".join(str(c) for c in choices)
    kind = "an integer" if integer else "a number"
    return f"{kind} {_describe(lo, hi, lo_open, hi_open, choices)}"


def in_range(
    lo: float | None = None,
    hi: float | None = None,
    *,
    integer: bool = False,
    lo_open: bool = False,
    hi_open: bool = False,
    choices: tuple[int, ...] = (),
) -> Callable[..., Any]:
    """A typer callback that refuses a value outside ``[lo, hi]`` (and NaN or infinity).

    ``None`` (an optional option not given) passes. The error is one line on stderr naming
    the option and its range, with exit code 2, like every user error of the CLI.

    Args:
        lo: Smallest value (``None``: no lower bound).
        hi: Largest value (``None``: no upper bound).
        integer: Describe the range as integers.
        lo_open: ``lo`` itself is refused.
        hi_open: ``hi`` itself is refused.
        choices: The only values allowed (instead of a range).

    Returns:
        The callback, for ``typer.Option(callback=...)``.
    """
    text = _range_text(lo, hi, integer, lo_open, hi_open, choices)

    def check(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value is None or ctx.resilient_parsing:
            return value
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        if ok and choices:
            ok = value in choices
        if ok and lo is not None:
            ok = value > lo if lo_open else value >= lo
        if ok and hi is not None:
            ok = value < hi if hi_open else value <= hi
        if not ok:
            name = param.opts[0] if param.opts else param.name
            typer.echo(f"Error: `{name}` must be {text}; got {_fmt(value)}.", err=True)
            raise typer.Exit(2)
        return value

    return check


def number_option(
    *decls: str,
    help: str,
    lo: float | None = None,
    hi: float | None = None,
    integer: bool = False,
    lo_open: bool = False,
    hi_open: bool = False,
    choices: tuple[int, ...] = (),
    **kwargs: Any,
) -> Any:
    """``typer.Option(*decls, help=...)`` with a range checked before the command runs.

    The help text ends with the range, e.g. ``"Mini-batch size (an integer from 1 to
    65536)."``. Further keywords go to ``typer.Option``.
    """
    check = in_range(lo, hi, integer=integer, lo_open=lo_open, hi_open=hi_open, choices=choices)
    limits = _range_text(lo, hi, integer, lo_open, hi_open, choices)
    text = help.rstrip().removesuffix(".")
    return typer.Option(*decls, help=f"{text} ({limits}).", callback=check, **kwargs)


#: ``--out`` of a training command: the model folder.
ModelDirOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Model folder (created; rerunning continues its checkpoint).",
        metavar="MODEL_DIR",
        show_default=False,
    ),
]

#: ``--json``: where the run record goes.
JsonOpt = Annotated[
    Path | None,
    typer.Option(
        "--json",
        help="Run record (version, params, seed, input checksums); <out>.json when omitted.",
        show_default=False,
    ),
]

# Reading a long label file: its columns, its classes and repeated (item, annotator) pairs.
ItemColOpt = Annotated[
    str | None,
    typer.Option("--item-col", help="Item column (detected when omitted).", show_default=False),
]
AnnotatorColOpt = Annotated[
    str | None,
    typer.Option(
        "--annotator-col",
        help="Annotator column of a long file (detected when omitted).",
        show_default=False,
    ),
]
LabelColOpt = Annotated[
    str | None,
    typer.Option(
        "--label-col",
        help="Label column of a long file (detected when omitted).",
        show_default=False,
    ),
]
OnDuplicateOpt = Annotated[
    str,
    typer.Option(
        "--on-duplicate",
        help="Repeated (item, annotator) pairs: error, first, last, or drop the pair when its "
        "labels conflict.",
    ),
]
#: ``--classes`` of a command that reads nominal labels (``aggregate`` has its own, for grades).
LabelClassesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--classes",
        help="Every class value, comma-separated or repeated (e.g. 0,1,2 or normal,abnormal), "
        "also classes no label uses yet. The sorted labels when omitted.",
        show_default=False,
    ),
]

SeedOpt = Annotated[
    int,
    number_option(
        "--seed",
        help="Random seed (weight initialisation, data order, dropout).",
        lo=0,
        hi=MAX_SEED,
        integer=True,
    ),
]

_IMAGES = typer.Option(
    "--images",
    help="Folder with one image per item or case, named after its id (<id>.png).",
    metavar="DIR",
    show_default=False,
)
#: ``--images`` where it is required, and where it is one of several kinds of input.
ImagesOpt = Annotated[Path, _IMAGES]
MaybeImagesOpt = Annotated[Path | None, _IMAGES]

EpochsOpt = Annotated[
    int,
    number_option("--epochs", help="Maximum number of epochs.", lo=1, hi=100_000, integer=True),
]

BatchSizeOpt = Annotated[
    int, number_option("--batch-size", help="Mini-batch size.", lo=1, hi=65_536, integer=True)
]

LrOpt = Annotated[float, number_option("--lr", help="Learning rate.", lo=0, hi=10, lo_open=True)]

PatienceOpt = Annotated[
    int,
    number_option(
        "--patience",
        help="Stop after this many epochs without a better validation score (training loss "
        "without validation data) and keep the best epoch; 0 trains every epoch.",
        lo=0,
        hi=100_000,
        integer=True,
    ),
]

ChannelsOpt = Annotated[
    int | None,
    number_option(
        "--channels",
        help="Image channels: 1 (grey) or 3 (RGB).",
        choices=(1, 3),
        integer=True,
        show_default=False,
    ),
]

#: Largest image side a command resizes or synthesises to (pixels).
MAX_IMAGE_SIDE = 8192

ImageSizeOpt = Annotated[
    int | None,
    number_option(
        "--image-size",
        help="Resize images to this many pixels square; when omitted all images must have "
        "the same size.",
        lo=4,
        hi=MAX_IMAGE_SIDE,
        integer=True,
        show_default=False,
    ),
]

ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume/--no-resume",
        help="Continue from MODEL_DIR/checkpoint/ when it holds a run with the same settings "
        "and inputs (raise --epochs to train longer); --no-resume starts over.",
    ),
]

PredictOpt = Annotated[
    Path | None,
    typer.Option(
        "--predict",
        help="After training, predict on the images of this folder; the predictions are "
        "written to MODEL_DIR.",
        metavar="DIR",
        show_default=False,
    ),
]


def _check_device(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """``--device``: auto, cpu, cuda or cuda:N; CUDA only where a CUDA device exists."""
    if value is None or ctx.resilient_parsing:
        return value
    name = param.opts[0] if param.opts else param.name
    device = str(value).strip().lower()
    if device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", device):
        typer.echo(f"Error: `{name}` must be auto, cpu, cuda or cuda:N; got {value!r}.", err=True)
        raise typer.Exit(2)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            typer.echo(
                f"Error: `{name} {device}`: no CUDA device is available here; use "
                f"`{name} cpu` (or auto).",
                err=True,
            )
            raise typer.Exit(2)
    return device


#: ``--device`` of a training command.
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where to train: auto (a CUDA GPU when one is available, else the CPU), cpu, "
        "cuda or cuda:N.",
        callback=_check_device,
    ),
]
