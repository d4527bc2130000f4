"""The validations table: coverage and strength measurements, with their settings and figures.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "validations",
        sa.Column("validation_id", sa.String(32), primary_key=True),
        # No CHECK on kind: a new ValidationKind must not need a table rebuild on SQLite.
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("efface_version", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("dataset", sa.JSON(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("hostname", sa.String(255), nullable=False),
    )
    op.create_index("ix_validations_created_at", "validations", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_validations_created_at", table_name="validations")
    op.drop_table("validations")
