"""An index on files.path: a resumed run asks, for every file, what its anonymized output hashed to.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_files_path", "files", ["path"])


def downgrade() -> None:
    op.drop_index("ix_files_path", table_name="files")
