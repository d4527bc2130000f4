"""The README's "HTTP service and Python client" section: its client example runs against a real server and
the options it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from efface.cli import app

from .conftest import Served

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("### HTTP service and Python client")
    end = text.index("\n## ", start)
    return text[start:end]


def _block(language: str) -> str:
    (block,) = re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.DOTALL)
    return block


def test_documented_service_options_exist() -> None:
    commands: list[tuple[list[str], str]] = []
    for line in _block("sh").splitlines():
        if line.startswith("efface "):
            words = [word for word in line.split()[1:3] if word.isalpha()]
            commands.append((words, line))
        elif line.startswith(" ") and commands:
            commands[-1] = (commands[-1][0], commands[-1][1] + line)
    assert [words for words, _ in commands] == [["keys", "create"], ["keys", "list"], ["keys", "revoke"], ["serve"]]
    for words, text in commands:
        result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, words
        for option in re.findall(r"--[a-z-]+", text):
            assert option in result.stdout, (words, option)


@pytest.mark.slow
def test_client_example_runs(
    served: Served, tmp_path: Path, astronaut_jpeg: bytes, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    (tmp_path / "group.jpg").write_bytes(astronaut_jpeg)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EFFACE_URL", served.base_url)
    monkeypatch.setenv("EFFACE_API_KEY", served.api_key)
    exec(compile(_block("python"), "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("1 [(")
    assert (tmp_path / "group-anonymized.jpg").read_bytes()[:2] == b"\xff\xd8"
