"""reviews: the state of a review (``efface review``) of one file: the boxes a person kept, added or removed and
whether the file was accepted, kept so that a review survives the page or the process being closed. It is working
state, not an audit record: the chain does not hash it; what a review does to a file is audited by the run that
applies it (a files row naming the boxes added and removed by hand, by whom and when).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("path", sa.Text(), primary_key=True),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("applied_run_id", sa.String(32), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("reviews")
