"""per-channel tier gates: broadcast_gates

Each tier's gate is kept per channel, so admins' SMS pacing at 1/s no longer holds customers' email.
Broadcasts already recorded get a gate row per tier and channel that mirrors their tier's state.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01 23:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CHANNELS = ("email", "sms", "chat", "social", "webhook")


def upgrade() -> None:
    op.create_table(
        "broadcast_gates",
        sa.Column("broadcast_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_through", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("opened_by", sa.String(length=20), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name=op.f("fk_broadcast_gates_broadcast_id_broadcasts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("broadcast_id", "tier", "channel", name=op.f("pk_broadcast_gates")),
    )
    # Broadcasts in flight carry on under the new rule from where their tiers stand.
    for channel in CHANNELS:
        op.execute(
            sa.text(
                "INSERT INTO broadcast_gates (broadcast_id, tier, channel, started_at, dispatched_through,"
                " opened_by, opened_at) SELECT broadcast_id, tier, :channel,"
                " CASE WHEN state IN ('sending', 'done') THEN started_at END, dispatched_through,"
                " CASE WHEN state = 'done' THEN COALESCE(gate, 'accepted') END,"
                " CASE WHEN state = 'done' THEN COALESCE(all_accepted_at, started_at) END"
                " FROM broadcast_tiers"
            ).bindparams(channel=channel)
        )


def downgrade() -> None:
    op.drop_table("broadcast_gates")
