"""variant keys: deliveries.locale and broadcast_variants.locale hold a language, a zone and a credit

`de@Europe/Berlin+compensation` is longer than the 20 characters a bare locale needed
(dispatcher/domain/variant_key.py). SQLite does not enforce a VARCHAR's length, so only
PostgreSQL's columns change (widening a varchar rewrites nothing there).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 14:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLES = ("deliveries", "broadcast_variants")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.alter_column(table, "locale", type_=sa.String(length=100), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.alter_column(table, "locale", type_=sa.String(length=20), existing_nullable=False)
