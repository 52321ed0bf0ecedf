"""``crowdmed serve``: run a reader study or a crowd through crowdmed's annotation server.

``crowdmed serve init`` creates a study folder, ``crowdmed serve invite`` prints one link per
annotator, ``crowdmed serve STUDY`` (short for ``crowdmed serve run STUDY``) serves it and
``crowdmed serve export`` writes the votes CSV. Needs the ``serve`` extra; this module imports
none of it at import time, so the core install keeps working and says which extra is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from crowdmed.cli._common import _stderr, _user_errors
from crowdmed.cli._options import MAX_SEED, number_option

__all__ = ["register", "serve_app"]

_EXTRA_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "jinja2", "multipart")
_EXTRA_HINT = "pip install 'crowdmed[serve]'"


class _ServeGroup(TyperGroup):
    """Command group where ``crowdmed serve STUDY ...`` means ``crowdmed serve run STUDY ...``.

    A first argument that is not a command name is taken as the study folder of ``run``.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


serve_app = typer.Typer(
    name="serve",
    cls=_ServeGroup,
    help="The annotation server: reader studies and crowds with a quiz, hidden gold and a live "
    "consensus (needs the serve extra). Example: crowdmed serve init study/ --images cases/ "
    "--classes normal,abnormal; crowdmed serve invite study/ ann1 ann2; crowdmed serve study/ "
    "--port 8000; crowdmed serve export study/ --out votes.csv",
    invoke_without_command=True,
    add_completion=False,
)

Database = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="SQLAlchemy URL of the study's database server (postgresql+psycopg://...); "
        "else CROWDMED_DATABASE_URL; a new study without either uses STUDY/study.sqlite.",
        show_default=False,
    ),
]
BaseUrl = Annotated[
    str,
    typer.Option("--base-url", help="Address of the server, used to print the links."),
]
StudyDir = Annotated[
    Path,
    typer.Argument(help="Study folder.", metavar="STUDY", show_default=False),
]


def _missing_extra() -> list[str]:
    return [m for m in _EXTRA_MODULES if importlib.util.find_spec(m) is None]


def _require_extra() -> None:
    missing = _missing_extra()
    if missing:
        raise ImportError(
            f"crowdmed serve needs the serve extra (missing {missing}): {_EXTRA_HINT}"
        )


@serve_app.callback()
def _serve(ctx: typer.Context) -> None:
    """The annotation server: reader studies and crowds with a quiz, hidden gold, consensus.

    Example: crowdmed serve init study/ --package tasks/; crowdmed serve invite study/ ann1
    ann2; crowdmed serve study/ --port 8000; crowdmed serve export study/ --out votes.csv
    """
    with _user_errors(ctx):
        _require_extra()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


# Options of `serve init`.
PackageOpt = Annotated[
    Path | None,
    typer.Option(
        "--package",
        help="Task package from `crowdmed crowd export` (its gold tasks make the quiz and "
        "the hidden gold).",
        show_default=False,
    ),
]
ImagesOpt = Annotated[
    Path | None,
    typer.Option("--images", help="Folder of images, one item each.", show_default=False),
]
StudyClassesOpt = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Comma-separated class names (with --images), in order for --kind ordinal.",
        show_default=False,
    ),
]
KindOpt = Annotated[
    str, typer.Option("--kind", help="binary, multiclass or ordinal (with --images).")
]
GoldFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--gold", help="CSV item,label of gold answers (with --images).", show_default=False
    ),
]
StudyNameOpt = Annotated[
    str | None, typer.Option("--name", help="Title of the study.", show_default=False)
]
QuestionOpt = Annotated[
    str | None,
    typer.Option("--question", help="Question shown above every image.", show_default=False),
]
LabelsPerItemOpt = Annotated[
    int,
    number_option(
        "--labels-per-item", help="Labels wanted per item.", lo=1, hi=10_000, integer=True
    ),
]
QuizSizeOpt = Annotated[
    int | None,
    number_option(
        "--quiz-size",
        help="Gold items in each annotator's quiz (10 with --package, 0 with --images).",
        lo=0,
        hi=100_000,
        integer=True,
        show_default=False,
    ),
]
PassMarkOpt = Annotated[
    float,
    number_option("--pass-mark", help="Quiz accuracy needed to get tasks.", lo=0, hi=1),
]
GoldShareOpt = Annotated[
    float | None,
    number_option(
        "--gold-share",
        help="Chance that a task is a hidden gold item (0.1 with --package, 0 with --images).",
        lo=0,
        hi=1,
        show_default=False,
    ),
]
StudySeedOpt = Annotated[
    int,
    number_option(
        "--seed", help="Seed of the quiz and gold draws.", lo=0, hi=MAX_SEED, integer=True
    ),
]


@serve_app.command("init")
def init_cmd(
    ctx: typer.Context,
    study: StudyDir,
    package: PackageOpt = None,
    images: ImagesOpt = None,
    classes: StudyClassesOpt = None,
    kind: KindOpt = "multiclass",
    gold: GoldFileOpt = None,
    name: StudyNameOpt = None,
    question: QuestionOpt = None,
    labels_per_item: LabelsPerItemOpt = 5,
    quiz_size: QuizSizeOpt = None,
    pass_mark: PassMarkOpt = 0.7,
    gold_share: GoldShareOpt = None,
    seed: StudySeedOpt = 0,
    database: Database = None,
    base_url: BaseUrl = "http://127.0.0.1:8000",
) -> None:
    """Create a study from a task package or from a folder of images and a class list.

    Prints the administrator link (shown once; `crowdmed serve invite --admin` makes another).

    Example: crowdmed serve init study/ --package tasks/ --labels-per-item 5 --quiz-size 10
    """
    console = _stderr()
    with _user_errors(ctx):
        _require_extra()
        from crowdmed.crowdsourcing.server import create_study

        st, token = create_study(
            study,
            package=package,
            images=images,
            classes=classes,
            kind=kind,
            gold=gold,
            name=name,
            question=question,
            labels_per_item=labels_per_item,
            quiz_size=quiz_size,
            pass_mark=pass_mark,
            gold_share=gold_share,
            seed=seed,
            database_url=database,
        )
        counts = st.storage.counts()
        st.close()
    console.print(
        f"Created study {study} with {counts['items'] - counts['gold_items']} items and "
        f"{counts['gold_items']} gold items."
    )
    typer.echo(f"Admin link (keep it private; shown once): {base_url}/admin/login/{token}")


@serve_app.command("invite")
def invite_cmd(
    ctx: typer.Context,
    study: StudyDir,
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Annotator names (one link each).", show_default=False),
    ] = None,
    count: Annotated[
        int,
        number_option(
            "--count",
            help="Also invite this many annotators named annotator-N.",
            lo=0,
            hi=100_000,
            integer=True,
        ),
    ] = 0,
    admin: Annotated[
        bool, typer.Option("--admin", help="Make a new administrator link instead.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Also write name,link to this CSV.", show_default=False),
    ] = None,
    database: Database = None,
    base_url: BaseUrl = "http://127.0.0.1:8000",
) -> None:
    """Add annotators and print one invite link each (tokens are stored hashed, shown once).

    Example: crowdmed serve invite study/ alice bob carol --base-url http://10.0.0.5:8000
    """
    with _user_errors(ctx):
        _require_extra()
        from crowdmed.crowdsourcing.server import open_study

        st = open_study(study, database_url=database)
        try:
            if admin:
                if names or count:
                    raise ValueError("--admin makes one administrator link; drop the names.")
                typer.echo(f"admin\t{base_url}/admin/login/{st.admin_token()}")
                return
            wanted = list(names or [])
            if count < 0:
                raise ValueError(f"`--count` must be >= 0; got {count}.")
            taken = {a["name"] for a in st.storage.annotators()}
            i = 1
            while count > 0:
                candidate = f"annotator-{i}"
                if candidate not in taken and candidate not in wanted:
                    wanted.append(candidate)
                    count -= 1
                i += 1
            if not wanted:
                raise ValueError("Name the annotators to invite or pass --count N.")
            dup = sorted({n for n in wanted if wanted.count(n) > 1})
            if dup:
                raise ValueError(f"Annotator names must be unique; {dup} appear twice.")
            links = {n: f"{base_url}/a/{t}" for n, t in st.invite(wanted).items()}
        finally:
            st.close()
        if out is not None:
            import pandas as pd

            from crowdmed.cli._common import _staged_outputs

            with _staged_outputs() as stage:
                pd.DataFrame({"name": list(links), "link": list(links.values())}).to_csv(
                    stage(out), index=False
                )
    for n, link in links.items():
        typer.echo(f"{n}\t{link}")


@serve_app.command("export")
def export_cmd(
    ctx: typer.Context,
    study: StudyDir,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Votes CSV item,annotator,label,gold,quiz_accuracy (label = class index); "
            "STUDY/exports/votes-<time>.csv when omitted.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out.")
    ] = False,
    database: Database = None,
) -> None:
    """Write the votes as the long CSV read by aggregate, crowd import and refine (atomic).

    Example: crowdmed serve export study/ --out votes.csv; crowdmed aggregate votes.csv
    """
    console = _stderr()
    with _user_errors(ctx):
        _require_extra()
        from crowdmed.crowdsourcing.server import export_votes, open_study

        st = open_study(study, database_url=database)
        try:
            path = export_votes(st, out, overwrite=overwrite)
        finally:
            st.close()
    console.print(f"Wrote the votes to {path} (and {path.name}.json).")


@serve_app.command("scores")
def scores_cmd(
    ctx: typer.Context,
    study: StudyDir,
    scores: Annotated[
        Path,
        typer.Argument(
            help="CSV item,score: items with a higher score are served first.",
            metavar="SCORES",
            show_default=False,
        ),
    ],
    database: Database = None,
) -> None:
    """Set the "which case next" scores of a study (also while it is being served).

    Example: crowdmed serve scores study/ next.csv
    """
    console = _stderr()
    with _user_errors(ctx):
        _require_extra()
        from crowdmed.crowdsourcing.server import open_study

        st = open_study(study, database_url=database)
        try:
            n = st.set_scores(scores)
        finally:
            st.close()
    console.print(f"Set the scores of {n} items; the highest is served next.")


@serve_app.command("run")
def run_cmd(
    ctx: typer.Context,
    study: StudyDir,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, number_option("--port", help="Port to listen on.", lo=1, hi=65_535, integer=True)
    ] = 8000,
    database: Database = None,
) -> None:
    """Serve a study (also `crowdmed serve STUDY`). Stop with Ctrl+C.

    Example: crowdmed serve study/ --host 0.0.0.0 --port 8000
    """
    console = _stderr()
    with _user_errors(ctx):
        _require_extra()
        import uvicorn

        from crowdmed.crowdsourcing.server import create_app, open_study

        st = open_study(study, database_url=database)
        app = create_app(st)
    console.print(
        f"Serving {st.settings.name} on http://{host}:{port} (admin page: /admin; Ctrl+C stops)."
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        st.close()


def register(app: typer.Typer) -> None:
    """Add ``crowdmed serve`` to the ``crowdmed`` application."""
    app.add_typer(serve_app, name="serve")
