"""The README's examples are executed, so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from efface.cli import app
from efface.config import load_settings
from efface.records import Method

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_config_file_example_loads(tmp_path: Path) -> None:
    (toml,) = _blocks("toml")
    config = tmp_path / "config.toml"
    config.write_text(toml)
    settings = load_settings(config_path=config)
    assert settings.method is Method.PIXELATE and settings.pixelate_blocks == 5
    assert settings.db_url.startswith("postgresql+psycopg://")


def test_documented_options_exist() -> None:
    usage = next(block for block in _blocks("sh") if "efface anonymize" in block)
    commands: list[tuple[list[str], str]] = []
    for line in usage.splitlines():
        if line.startswith("efface "):
            words = [w for w in line.split()[1:3] if w.isalpha()]
            commands.append((words, line))
        elif commands:
            commands[-1] = (commands[-1][0], commands[-1][1] + line)
    assert len(commands) >= 4
    for words, text in commands:
        result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, words
        for option in re.findall(r"--[a-z-]+", text):
            assert option in result.stdout, (words, option)
