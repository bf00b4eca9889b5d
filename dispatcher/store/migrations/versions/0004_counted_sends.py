"""counted sends: deliveries.sends and .claim replace possible_duplicate; per tier and channel send totals

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
    op.create_table(
        "broadcast_sends",
        sa.Column("broadcast_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("extra_sends", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["broadcast_id"], ["broadcasts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("broadcast_id", "tier", "channel"),
    )
    op.execute(
        "INSERT INTO broadcast_sends (broadcast_id, tier, channel, sends, extra_sends) "
        "SELECT broadcast_id, tier, channel, sum(sends), sum(CASE WHEN sends > 1 THEN sends - 1 ELSE 0 END) "
        "FROM deliveries WHERE sends > 0 GROUP BY broadcast_id, tier, channel"
    )


def downgrade() -> None:
    op.drop_table("broadcast_sends")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("possible_duplicate", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE deliveries SET possible_duplicate = (sends > 1)")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("claim")
        batch_op.drop_column("sends")
