"""The root command table: lazy loading, and the same help as the commands themselves."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from crowdmed.cli import app
from crowdmed.cli.root import COMMANDS, TRAIN_COMMANDS, LazyGroup, load_command

HEAVY = ("torch", "scipy", "matplotlib")


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


@pytest.mark.parametrize(
    ("name", "spec"), [*COMMANDS.items(), *TRAIN_COMMANDS.items()], ids=lambda x: str(x)
)
def test_table_help_is_the_commands_first_paragraph(name: str, spec) -> None:
    command = load_command(name, spec)
    assert command.name == name
    assert _first_paragraph(spec.help) == _first_paragraph(command.help or "")


def test_help_lists_every_command_like_the_loaded_commands(monkeypatch) -> None:
    lazy = CliRunner().invoke(app, ["--help"], terminal_width=80)
    assert lazy.exit_code == 0
    for name in COMMANDS:
        assert f" {name} " in lazy.output
    # Without the stand-ins every command is loaded for the help: the same text.
    monkeypatch.setattr(LazyGroup, "format_help", TyperGroup.format_help)
    eager = CliRunner().invoke(app, ["--help"], terminal_width=80)
    assert eager.exit_code == 0
    assert lazy.output == eager.output
    train = CliRunner().invoke(app, ["train", "--help"], terminal_width=80)
    monkeypatch.undo()
    assert train.output == CliRunner().invoke(app, ["train", "--help"], terminal_width=80).output
    assert list(typer.main.get_command(app).commands) == list(COMMANDS)


def test_unknown_command_suggests_a_name() -> None:
    result = CliRunner().invoke(app, ["agregate"])
    assert result.exit_code == 2
    assert "aggregate" in result.output


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_help_imports_no_command_module() -> None:
    mods = _modules_after(
        "from crowdmed.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    loaded = {m for m in mods if m.startswith("crowdmed.cli.")}
    assert loaded == {"crowdmed.cli._common", "crowdmed.cli.root"}
    assert not {m.split(".")[0] for m in mods} & set(HEAVY)


def test_aggregate_imports_only_its_module(tmp_path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("item,annotator,label\na,r1,0\na,r2,1\nb,r1,1\nb,r2,1\n")
    code = (
        "from crowdmed.cli import main\ntry:\n"
        f"    main(['aggregate', {str(labels)!r}, '-m', 'majority-vote', '-o', "
        f"{str(tmp_path / 'out.csv')!r}])\nexcept SystemExit as exc:\n    assert not exc.code"
    )
    mods = _modules_after(code)
    assert (tmp_path / "out.csv").exists()
    commands = {m for m in mods if m.startswith("crowdmed.cli.")}
    assert commands == {"crowdmed.cli._common", "crowdmed.cli._options", "crowdmed.cli.aggregate",
                        "crowdmed.cli.root"}  # fmt: skip
    assert not {m.split(".")[0] for m in mods} & {"torch", "matplotlib"}
    # Output captured (not a terminal): no progress display, and rich's progress not loaded.
    assert "rich.progress" not in mods


def test_reporter_shows_progress_on_a_terminal_only() -> None:
    import io

    from rich.console import Console

    from crowdmed.cli._common import _reporter

    for terminal in (False, True):
        buffer = io.StringIO()
        console = Console(file=buffer, force_terminal=terminal, width=80)
        with _reporter(console, "Fitting [x]") as report:
            report(completed=3, description="EM iteration 3", metrics="ll -1.5")
        assert ("EM iteration 3" in buffer.getvalue()) is terminal


def test_import_crowdmed_is_light() -> None:
    mods = _modules_after("import crowdmed")
    assert not {m.split(".")[0] for m in mods} & {*HEAVY, "pandas"}


def test_aggregate_on_a_plain_csv_does_not_import_pandas(tmp_path) -> None:
    labels = tmp_path / "labels.csv"
    # Three classes: binary labels add operating points (pandas and scipy) to the record.
    cells = ["007,r1,cat", "007,r2,cat", "7,r1,dog", "7,r2,dog", "7,r3,", "8,r1,owl", "8,r3,owl"]
    labels.write_text("item,annotator,label\n" + "\n".join(cells) + "\n")
    out = tmp_path / "out.csv"
    code = (
        "from crowdmed.cli import main\ntry:\n"
        f"    main(['aggregate', {str(labels)!r}, '-m', 'dawid-skene', '-o', {str(out)!r}])\n"
        "except SystemExit as exc:\n    assert not exc.code"
    )
    mods = _modules_after(code)
    assert "pandas" not in mods
    rows = [line.split(",")[:2] for line in out.read_text().splitlines()]
    assert rows == [['"item"', '"label"'], ['"007"', '"cat"'], ['"7"', '"dog"'], ['"8"', '"owl"']]
    assert '"pandas": "' in (tmp_path / "out.csv.json").read_text()


def test_aggregate_result_consensus_is_a_table_built_on_access(tmp_path) -> None:
    import pandas as pd

    from crowdmed.pipelines.aggregate import aggregate_file, consensus_frame

    labels = tmp_path / "labels.csv"
    labels.write_text("item,annotator,label\n007,r1,1\n007,r2,1\n7,r1,0\n7,r2,1\n")
    result = aggregate_file(labels, "majority-vote")
    assert isinstance(result.consensus_columns(), dict)
    pd.testing.assert_frame_equal(
        result.consensus, consensus_frame(result.labels, result.aggregator)
    )
    assert result.consensus is result.consensus
    assert result.consensus["item"].tolist() == ["007", "7"]
