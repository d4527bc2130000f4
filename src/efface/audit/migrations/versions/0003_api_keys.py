"""The api_keys table: keys of the HTTP service, stored as hashes only (the key itself is shown once).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        # The public id, also the key's prefix: requests are audited under it, never under the key.
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        # sha256 of the whole key (keys are 256 random bits, so no salt or slow hash is needed).
        sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        # Requests per minute; None: the server's default.
        sa.Column("rate_limit_per_min", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
