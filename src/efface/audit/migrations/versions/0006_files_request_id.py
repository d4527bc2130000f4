"""files.request_id, the first audited column added after the chain: a request to the HTTP service has a request
id and no path, so files.path becomes nullable; and chain.content_version, the version of the field lists a
chain row's content was hashed with (NULL: version 1, every row written before this revision; version 2 adds
files.request_id). The existing rows keep NULL in both new columns, so every row hash stays valid.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-15
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite cannot drop a NOT NULL: batch mode copies the table there (PostgreSQL ALTERs in place).
    with op.batch_alter_table("files") as batch:
        batch.alter_column("path", existing_type=sa.Text(), nullable=True)
        batch.add_column(sa.Column("request_id", sa.String(32), nullable=True))
        batch.create_index("ix_files_request_id", ["request_id"])
    op.add_column("chain", sa.Column("content_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Fails while a files row has no path. Chain rows hashed with content version 2 no longer verify at 0005
    # (their hash covers content_version); below 0004 the chain is dropped altogether.
    op.drop_column("chain", "content_version")
    with op.batch_alter_table("files") as batch:
        batch.drop_index("ix_files_request_id")
        batch.drop_column("request_id")
        batch.alter_column("path", existing_type=sa.Text(), nullable=False)
