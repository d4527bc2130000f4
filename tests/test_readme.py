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
    help_text = CliRunner().invoke(app, ["anonymize", "--help"], env={"COLUMNS": "200"}).stdout
    usage = next(block for block in _blocks("sh") if "efface anonymize" in block)
    for option in re.findall(r"--[a-z-]+", usage):
        assert option in help_text, option
