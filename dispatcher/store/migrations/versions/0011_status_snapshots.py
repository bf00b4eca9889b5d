"""status snapshots: the public status page's last snapshot, served while the database is away

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 15:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "status_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_snapshots")),
    )


def downgrade() -> None:
    op.drop_table("status_snapshots")
