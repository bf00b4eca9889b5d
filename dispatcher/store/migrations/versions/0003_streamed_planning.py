"""streamed planning: broadcast_tiers.dispatched_through; no index on provider_message_id

Nothing looks deliveries up by provider message id (status webhooks carry our delivery id), and
that index cost an index insert on every state change of every row: two or three per message.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable, no default: an ALTER that SQLite and PostgreSQL both apply without a table rewrite
    with op.batch_alter_table("broadcast_tiers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "dispatched_through", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_provider_message_id")


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_provider_message_id", ["provider_message_id"], unique=False)
    with op.batch_alter_table("broadcast_tiers", schema=None) as batch_op:
        batch_op.drop_column("dispatched_through")
