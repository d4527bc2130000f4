"""runs.settings_sha256: sha256 of a run's detection and transform settings and its model, so that a resumed run
skips a file only when an earlier run with the same settings left it done (a stronger re-run is no resume).
Content version 3 hashes it in a run's start. The existing runs keep NULL, so every row hash stays valid and
their files are never taken as done: the next run does them again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("settings_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    # Chain rows hashed with content version 3 no longer verify at 0006 (their content covers the column).
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("settings_sha256")
