"""The one place where foreign errors become ``AuditError``: every SQLAlchemy, driver, Alembic and file-system
error raised inside a ``translate_errors`` block leaves this package as ``AuditError``, its cause chained.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from efface.errors import AuditError

__all__ = ["translate_errors"]

_FOREIGN_ERRORS = (sa.exc.SQLAlchemyError, CommandError, RevisionError, OSError)


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
    except _FOREIGN_ERRORS as exc:
        raise AuditError(f"cannot {action}: {_one_line(exc)}") from exc
