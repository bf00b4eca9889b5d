"""silent publish: incident_updates.notify, .public, .tiers (sent to nobody, or to chosen tiers only)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 15:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"  # rechained onto S1's status_snapshots when status-s1 was merged
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("incident_updates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column("tiers", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incident_updates", schema=None) as batch_op:
        batch_op.drop_column("tiers")
        batch_op.drop_column("public")
        batch_op.drop_column("notify")
