"""files.uncertain and files.uncertainty: what the detector was unsure of in a file, for a reviewer. ``uncertain``
counts what is worth a look (faint candidates below the operating threshold, a video's frames bridged by the
tracker; 0: nothing; indexed, so that ``audit list --uncertain`` finds them); ``uncertainty`` holds the faint
candidates' boxes and the counts by size (coordinates and counts, never pixels). Content version 4 hashes both in
a file's record. The existing rows keep NULL (nothing recorded), so every row hash stays valid.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("uncertain", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("uncertainty", sa.JSON(), nullable=True))
        batch.create_index("ix_files_uncertain", ["uncertain"])


def downgrade() -> None:
    # Chain rows hashed with content version 4 no longer verify at 0007 (their content covers the columns).
    with op.batch_alter_table("files") as batch:
        batch.drop_index("ix_files_uncertain")
        batch.drop_column("uncertainty")
        batch.drop_column("uncertain")
