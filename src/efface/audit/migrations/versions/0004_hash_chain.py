"""The chain table: a hash chain over every run, file, validation and prune, and the chaining of the rows that
exist already (a genesis event, then one chain row per record as it is now), so ``verify`` passes at once.

The rows are hashed with the audit key when the store that upgrades has one (``EFFACE_AUDIT_KEY``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from efface.audit.ledger import chain_existing_rows

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain",
        # Assigned under the append lock: 1, 2, 3, ... without gaps.
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        # The record a row stands for; no foreign keys: a pruned record's chain row stays.
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("file_id", sa.Integer(), nullable=True),
        sa.Column("validation_id", sa.String(32), nullable=True),
        # The content of genesis and prune events, which have no record.
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("hash_alg", sa.String(16), nullable=False),
        # Set by a prune on the rows whose records it deleted; not part of the hash.
        sa.Column("pruned_by", sa.BigInteger(), nullable=True),
    )
    for column in ("run_id", "file_id", "validation_id", "pruned_by"):
        op.create_index(f"ix_chain_{column}", "chain", [column])
    chain_existing_rows(op.get_bind(), key=context.config.attributes.get("chain_key"))


def downgrade() -> None:
    for column in ("run_id", "file_id", "validation_id", "pruned_by"):
        op.drop_index(f"ix_chain_{column}", table_name="chain")
    op.drop_table("chain")
