"""The Alembic migrations are frozen history: they import no efface code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import efface.audit

MIGRATIONS_DIR = Path(efface.audit.__file__).parent / "migrations"
MIGRATION_FILES = [*sorted(MIGRATIONS_DIR.glob("versions/*.py")), MIGRATIONS_DIR / "env.py"]


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, anywhere in it; relative imports as ``.name``."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules.append("." * node.level + (node.module or ""))
    return modules


@pytest.mark.parametrize("path", MIGRATION_FILES, ids=lambda path: path.name)
def test_no_migration_imports_efface(path: Path) -> None:
    live = [m for m in imported_modules(path) if m == "efface" or m.startswith(("efface.", "."))]
    assert live == [], f"{path.name} imports live code: {live}"


def test_the_import_check_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text(
        "import os\nimport efface.audit.ledger as ledger\nfrom efface.audit import chain\nfrom . import x\n"
        "def f():\n    from efface import records\n"
    )
    assert imported_modules(source) == ["os", "efface.audit.ledger", "efface.audit", ".", "efface"]
