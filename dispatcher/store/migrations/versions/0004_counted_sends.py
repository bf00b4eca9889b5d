"""counted sends: deliveries.sends and .claim replace possible_duplicate; per-tier send totals

One bit per row could not tell a message sent three times from one sent twice, nor a flagged row
from an unflagged duplicate. `sends` counts them; `claim` names the claim a worker holds, so an
answer is recorded against the claim that sent it. Existing rows get the count the flag implied.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SENT = "('sent', 'delivered', 'bounced', 'undelivered')"


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sends", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("claim", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE deliveries SET sends = CASE WHEN possible_duplicate THEN 2 "
        f"WHEN state IN {_SENT} THEN 1 ELSE 0 END"
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("possible_duplicate")
    with op.batch_alter_table("broadcast_tiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sends", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("extra_sends", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE broadcast_tiers SET "
        "sends = (SELECT coalesce(sum(d.sends), 0) FROM deliveries d "
        "WHERE d.broadcast_id = broadcast_tiers.broadcast_id AND d.tier = broadcast_tiers.tier), "
        "extra_sends = (SELECT coalesce(sum(d.sends - 1), 0) FROM deliveries d "
        "WHERE d.broadcast_id = broadcast_tiers.broadcast_id AND d.tier = broadcast_tiers.tier "
        "AND d.sends > 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("broadcast_tiers", schema=None) as batch_op:
        batch_op.drop_column("extra_sends")
        batch_op.drop_column("sends")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("possible_duplicate", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE deliveries SET possible_duplicate = (sends > 1)")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("claim")
        batch_op.drop_column("sends")
