"""``crowdmed crowd export | gold | simulate | import`` and ``crowdmed refine``.

Thin shells over :mod:`crowdmed.pipelines.crowd`: task packages out, votes in, and the
refinement of a mitosis detector on the crowd's votes (AggNet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from crowdmed.cli._common import (
    _check_outputs,
    _import_torch,
    _reporter,
    _staged_outputs,
    _stderr,
    _user_errors,
    run_record,
    save_model_folder,
    write_run_record,
)
from crowdmed.cli._options import LrOpt, SeedOpt, number_option
from crowdmed.pipelines.model_folder import MODEL_FILES
from crowdmed.pipelines.records import file_record

__all__ = ["crowd_app", "register"]

crowd_app = typer.Typer(
    name="crowd",
    help="The crowdsourcing loop: export patch-labelling tasks, simulate or import votes.",
    no_args_is_help=True,
    add_completion=False,
)


def _opt(*names: str, help_text: str, metavar: str | None = None) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help_text, metavar=metavar, show_default=False)


PackageOpt = Annotated[Path, _opt("--package", help_text="Task package folder.", metavar="PKG")]
PointsOpt = Annotated[
    Path, _opt("--points", help_text="Reference points CSV image,x,y (the known mitoses).")
]
RadiusOpt = Annotated[
    float,
    number_option("--radius", help="Matching radius in pixels.", lo=0, hi=10_000, lo_open=True),
]
QuizOpt = Annotated[
    Path | None,
    _opt("--quiz", help_text="CSV annotator,quiz_accuracy; else the accuracy on the gold tasks."),
]
OnErrorOpt = Annotated[
    str,
    typer.Option(
        "--on-error",
        help="raise: stop on malformed or duplicated rows; drop: skip them and print them.",
    ),
]


@crowd_app.command("export")
def crowd_export(
    ctx: typer.Context,
    candidates: Annotated[
        Path,
        typer.Argument(
            help="Candidates CSV image,x,y,score (from `crowdmed mitosis detect`).",
            metavar="CANDIDATES",
            show_default=False,
        ),
    ],
    images: Annotated[Path, _opt("--images", help_text="Folder of the fields.", metavar="DIR")],
    out: Annotated[Path, _opt("--out", "-o", help_text="Task package folder to create.")],
    threshold: Annotated[
        float | None,
        number_option(
            "--threshold",
            help="Export candidates scoring at least this (a lower operating point); all "
            "when omitted.",
            lo=0,
            hi=1,
            show_default=False,
        ),
    ] = None,
    gold: Annotated[
        Path | None,
        _opt(
            "--gold",
            help_text="Pool of gold questions: CSV image,x,y,label with label mitosis/not "
            "mitosis (reference points and known negatives).",
        ),
    ] = None,
    gold_rate: Annotated[
        float,
        number_option(
            "--gold-rate", help="Share of all tasks that are gold questions.", lo=0, hi=1
        ),
    ] = 0.1,
    patch_size: Annotated[
        int,
        number_option(
            "--patch-size", help="Side of the context crops in pixels.", lo=3, hi=4096, integer=True
        ),
    ] = 99,
    label_studio: Annotated[
        bool,
        typer.Option(
            "--label-studio/--no-label-studio",
            help="Also write label_studio/tasks.json and label_studio/config.xml.",
        ),
    ] = True,
    url_prefix: Annotated[
        str,
        typer.Option("--url-prefix", help="Prefix of the image paths in the Label Studio tasks."),
    ] = "",
    seed: SeedOpt = 0,
) -> None:
    """Turn candidates into a task package: context crops, blue-ratio views, gold questions.

    Example: crowdmed crowd export candidates.csv --images fields/
    --threshold 0.1 --gold gold.csv --gold-rate 0.1 --out tasks/
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.pipelines.crowd import export_package

        pkg = export_package(**ctx.params)
    console.print(
        f"Wrote {len(pkg.manifest)} tasks ({pkg.n_gold} gold) to {out} "
        f"(manifest.csv, votes_template.csv{', label_studio/' if label_studio else ''})."
    )


@crowd_app.command("gold")
def crowd_gold(
    ctx: typer.Context,
    points: PointsOpt,
    candidates: Annotated[
        Path,
        _opt(
            "--candidates",
            help_text="Candidates CSV image,x,y,score in the same fields; those farther than "
            "--radius from every reference point become known negatives.",
        ),
    ],
    out: Annotated[Path, _opt("--out", "-o", help_text="Gold pool CSV image,x,y,label.")],
    radius: RadiusOpt = 15.0,
) -> None:
    """Build a pool of gold questions from reference points and known false candidates.

    Example: crowdmed crowd gold --points gold/points.csv
    --candidates gold_cands.csv --out gold.csv
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.pipelines.crowd import gold_pool

        _check_outputs([points, candidates], {"--out": out})
        pool, n_neg = gold_pool(points, candidates, radius=radius)
        with _staged_outputs() as stage:
            pool.to_csv(stage(out), index=False)
    n_ref = len(pool) - n_neg
    console.print(f"Wrote {n_ref} mitoses and {n_neg} known negatives as gold questions: {out}")


@crowd_app.command("simulate")
def crowd_simulate(
    ctx: typer.Context,
    package: PackageOpt,
    points: Annotated[
        Path,
        _opt(
            "--points",
            help_text="Reference points CSV image,x,y: a task within --radius of one is a mitosis.",
        ),
    ],
    out: Annotated[Path, _opt("--out", "-o", help_text="Votes CSV task,annotator,label.")],
    radius: RadiusOpt = 15.0,
    n_annotators: Annotated[
        int,
        number_option("--annotators", help="Simulated workers.", lo=1, hi=100_000, integer=True),
    ] = 20,
    votes_per_task: Annotated[
        int,
        number_option("--votes-per-task", help="Votes per task.", lo=1, hi=10_000, integer=True),
    ] = 10,
    spammers: Annotated[
        float,
        number_option("--spammers", help="Share of spammers among the workers.", lo=0, hi=1),
    ] = 0.25,
    seed: SeedOpt = 0,
) -> None:
    """Simulate crowd votes on a task package (synthetic workers, some spammers).

    The true annotator parameters go to <out>.annotators.csv.

    Example: crowdmed crowd simulate --package tasks/ --points points.csv
    --out votes.csv
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.crowdsourcing.tasks import load_package
        from crowdmed.pipelines.crowd import simulate_package_votes

        load_package(package)  # a bad package is named before the outputs are checked
        ann_out = out.with_name(out.stem + ".annotators.csv")
        _check_outputs([points], {"--out": out, "--out annotators": ann_out})
        sim, n_tasks = simulate_package_votes(
            package,
            points,
            radius=radius,
            n_annotators=n_annotators,
            votes_per_task=votes_per_task,
            spammers=spammers,
            seed=seed,
        )
        with _staged_outputs() as stage:
            sim.votes.to_csv(stage(out), index=False)
            sim.annotators.to_csv(stage(ann_out), index=False)
    console.print(
        f"Simulated {len(sim.votes)} votes of {n_annotators} workers on {n_tasks} tasks: {out}"
    )


@crowd_app.command("import")
def crowd_import(
    ctx: typer.Context,
    votes: Annotated[
        Path,
        typer.Argument(
            help="Votes: CSV task,annotator,label (optional quiz_accuracy) or a Label Studio "
            "JSON export.",
            metavar="VOTES",
            show_default=False,
        ),
    ],
    package: PackageOpt,
    out: Annotated[
        Path,
        _opt(
            "--out",
            "-o",
            help_text="Labels CSV item,annotator,label,gold,quiz_accuracy (label 1 = mitosis), "
            "readable by `crowdmed aggregate` and `crowdmed train classify`.",
        ),
    ],
    quiz: QuizOpt = None,
    on_error: OnErrorOpt = "raise",
) -> None:
    """Import crowd votes for a task package; malformed rows are named by line.

    Example: crowdmed crowd import votes.csv --package tasks/ --out labels.csv
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.crowdsourcing.votes import read_votes
        from crowdmed.data.io import write_labels

        json_out = out.with_name(out.name + ".json")
        _check_outputs([votes], {"--out": out, "--out .json": json_out})
        imported = read_votes(votes, package, quiz=quiz, on_error=on_error)
        cl = imported.labels
        quiz_source = dict(zip(map(str, cl.annotator_ids), imported.quiz_source, strict=True))
        record = run_record(
            ctx,
            inputs={"votes": file_record(votes)},
            n_votes=cl.n_labels,
            n_tasks=cl.n_items,
            n_annotators=cl.n_annotators,
            n_problems=len(imported.problems),
            problems=imported.problems,
            quiz_source=quiz_source,
        )
        with _staged_outputs() as stage:
            write_labels(cl, stage(out))
            write_run_record(ctx, json_out, record, stage)
    if len(imported.problems):
        console.print(f"Skipped {len(imported.problems)} rows:\n{imported.report()}")
    console.print(
        f"Imported {cl.n_labels} votes of {cl.n_annotators} annotators on {cl.n_items} tasks: {out}"
    )


def refine_cmd(
    ctx: typer.Context,
    model: Annotated[
        Path,
        _opt(
            "--model",
            help_text="Model folder written by `crowdmed mitosis train`.",
            metavar="MODEL_DIR",
        ),
    ],
    package: PackageOpt,
    votes: Annotated[
        Path, _opt("--votes", help_text="Votes CSV task,annotator,label or a Label Studio export.")
    ],
    out: Annotated[
        Path,
        _opt(
            "--out",
            "-o",
            help_text="Folder: the detector (config.json, model.safetensors; one network "
            "refined), truth.csv, annotators.csv, history.csv, run.json.",
            metavar="OUT_DIR",
        ),
    ],
    images: Annotated[
        Path | None,
        _opt(
            "--images",
            help_text="Folder of the fields: cut the network's inputs from them exactly (with "
            "the detector's stain normalisation); else resample the package's context crops.",
            metavar="DIR",
        ),
    ] = None,
    quiz: QuizOpt = None,
    on_error: OnErrorOpt = "raise",
    scale: Annotated[
        float,
        number_option("--scale", help="Scale of the network to refine.", lo=0, hi=10, lo_open=True),
    ] = 0.33,
    lr: LrOpt = 1e-3,
    epochs: Annotated[
        int,
        number_option(
            "--epochs", help="EM rounds, one full-batch step each.", lo=1, hi=100_000, integer=True
        ),
    ] = 50,
    tau: Annotated[
        float,
        number_option(
            "--tau",
            help="Strength of the quiz trust prior (eq. 8; 0.1-1).",
            lo=0,
            hi=1000,
            lo_open=True,
        ),
    ] = 0.5,
    seed: SeedOpt = 0,
) -> None:
    """Refine the detector's 0.33-scale network on crowd votes (AggNet's aggregation layer).

    Example: crowdmed refine --model model/ --package tasks/ --votes votes.csv
    --out refined/
    """
    console = _stderr()
    with _user_errors(ctx):
        _import_torch("refine")
        from crowdmed.pipelines.crowd import refine_from_votes

        if out.exists() and not out.is_dir():
            raise ValueError(f"`--out` must be a folder; '{out}' is a file.")
        if out.resolve() == model.resolve():
            raise ValueError("`--out` must differ from `--model`; the input model is kept.")
        names = (*MODEL_FILES, "truth.csv", "annotators.csv", "history.csv", "run.json")
        model_file = model / MODEL_FILES[1]
        _check_outputs([model_file, votes], {f"--out {n}": out / n for n in names})
        with _reporter(console, "Reading the votes") as report:
            run = refine_from_votes(
                **{k: v for k, v in ctx.params.items() if k != "out"}, progress=report
            )
        record = save_model_folder(ctx, run, out, model=file_record(model_file), **run.record)
    if run.problems:
        console.print(f"Skipped {run.record['n_problems']} vote rows:\n{run.problems}")
    r = run.record
    table = Table(title="Refinement (AggNet)", show_header=False)
    table.add_row(
        "tasks / votes / annotators", f"{r['n_tasks']} / {r['n_votes']} / {r['n_annotators']}"
    )
    table.add_row("inferred mitoses", str(r["inferred_mitoses"]))
    spammers = int((run.annotators["spammer_score"] < 0.05).sum())
    table.add_row("spammers (score < 0.05)", str(spammers))
    table.add_row("time", f"{record['elapsed_seconds']:.1f} s")
    console.print(table)
    console.print(f"Refined detector and tables written to {out}")


def register(app: typer.Typer) -> None:
    """Add ``crowdmed crowd ...`` and ``crowdmed refine`` to the application."""
    app.add_typer(crowd_app, name="crowd")
    app.command("refine")(refine_cmd)
