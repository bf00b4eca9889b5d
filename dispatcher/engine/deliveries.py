"""Delivery rows: the one builder of a new row, and the inserts that never plan anyone twice.

De-duplication is the unique (broadcast, channel, address) key with ON CONFLICT DO NOTHING:
planning the earlier tier first means a person in two lists is reached once, at the earlier tier,
and a Slack channel shared by many subscribers gets one post.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from channels.base import ChannelName
from dispatcher.domain.states import DeliveryState
from dispatcher.store.bulk import insert_ignoring
from dispatcher.store.models import Delivery

# Marks a pending row that waits out its recipient's quiet hours until `next_attempt_at`.
QUIET_HOURS_CODE = "quiet_hours"


def insert_ignore(session: Session, rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Bulk insert deliveries, skipping any (broadcast, channel, address) that already has one;
    returns the (id, channel) of the rows it inserted."""
    table = Delivery.__table__
    inserted = insert_ignoring(
        session, table, rows, ["broadcast_id", "channel", "address"], (table.c.id, table.c.channel)
    )
    return [(row_id, channel) for row_id, channel in inserted]


def insert_one(session: Session, row: dict[str, Any]) -> int | None:
    """Inserts one delivery unless its key exists; returns its id when inserted."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(Delivery)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["broadcast_id", "channel", "address"])
        .returning(Delivery.id)
    )
    return session.scalar(stmt)


def delivery_row(
    broadcast_id: int,
    tier: int,
    channel: ChannelName,
    address: str,
    subscriber_id: int | None,
    locale: str,
    now: datetime,
) -> dict[str, Any]:
    """A new pending delivery, as every planner (tiers, failover, confirmations) inserts it."""
    return {
        "broadcast_id": broadcast_id,
        "tier": tier,
        "channel": channel.value,
        "address": address,
        "subscriber_id": subscriber_id,
        "locale": locale,
        "state": DeliveryState.PENDING.value,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
