"""The one place where foreign errors become ``AuditError``: every SQLAlchemy, driver, Alembic and file-system
error raised inside a ``translate_errors`` block leaves this package as ``AuditError``, its cause chained.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from efface.errors import AuditError

__all__ = ["translate_errors"]

_FOREIGN_ERRORS: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError, OSError)
# Alembic is imported only to migrate an older database (``store._upgrade``), not by every command that opens the
# audit log; its errors are looked up once it is loaded: one that is not imported cannot have raised anything.
_ALEMBIC_ERRORS = (("alembic.util", "CommandError"), ("alembic.script.revision", "RevisionError"))


def _foreign_errors() -> tuple[type[BaseException], ...]:
    loaded = [getattr(sys.modules[module], name) for module, name in _ALEMBIC_ERRORS if module in sys.modules]
    return (*_FOREIGN_ERRORS, *loaded)


def _one_line(exc: BaseException) -> str:
    # DBAPIError and StatementError wrap the driver's error, whose first line is the useful one.
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Raises ``AuditError("cannot <action>: <first line of the cause>")`` from any foreign error in the block.

    Args:
        action: what the block does, e.g. ``"list runs"``.

    Raises:
        AuditError: the block raised an SQLAlchemy, driver, Alembic or file-system error.
    """
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, _foreign_errors()):
            raise
        raise AuditError(f"cannot {action}: {_one_line(exc)}") from exc
