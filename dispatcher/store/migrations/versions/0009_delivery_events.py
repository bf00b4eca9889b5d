"""delivery history and the indexes the dashboards' receipts filters read

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "delivery_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("delivery_id", ID, nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=True),
        sa.Column("code", sa.String(length=100), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_events_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_events")),
    )
    op.create_index("ix_delivery_events_delivery", "delivery_events", ["delivery_id", "id"], unique=False)
    op.create_index(
        "ix_deliveries_broadcast_state_id", "deliveries", ["broadcast_id", "state", "id"], unique=False
    )
    op.create_index(
        "ix_deliveries_subscriber_broadcast", "deliveries", ["subscriber_id", "broadcast_id"], unique=False
    )
    op.create_index("ix_deliveries_broadcast_id", "deliveries", ["broadcast_id", "id"], unique=False)
    op.create_index(
        "ix_deliveries_broadcast_updated", "deliveries", ["broadcast_id", "updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_broadcast_updated", table_name="deliveries")
    op.drop_index("ix_deliveries_broadcast_id", table_name="deliveries")
    op.drop_index("ix_deliveries_subscriber_broadcast", table_name="deliveries")
    op.drop_index("ix_deliveries_broadcast_state_id", table_name="deliveries")
    op.drop_index("ix_delivery_events_delivery", table_name="delivery_events")
    op.drop_table("delivery_events")
