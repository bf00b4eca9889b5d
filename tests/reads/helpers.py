"""Rows for the read queries' tests, written straight to the database (no engine, no API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from dispatcher.store.bulk import insert_rows
from dispatcher.store.models import Broadcast, BroadcastCount, Delivery, Incident, Subscriber

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def incident(session: Session, *, kind: str = "incident", status: str = "investigating") -> Incident:
    row = Incident(kind=kind, title=f"{kind} {status}", status=status, impact="major", message={"x": 1})
    session.add(row)
    session.flush()
    return row


def broadcast(session: Session, incident_id: int | None, *, state: str = "sending") -> Broadcast:
    row = Broadcast(incident_id=incident_id, event="incident_opened", state=state)
    session.add(row)
    session.flush()
    return row


def subscriber(session: Session, external_id: str, **addresses: str) -> Subscriber:
    row = Subscriber(external_id=external_id, unsubscribe_token=f"tok-{external_id}", **addresses)
    session.add(row)
    session.flush()
    return row


STATES = ("pending", "sent", "delivered", "failed")
CHANNELS = ("email", "sms", "chat")


def deliveries(session: Session, broadcast_id: int, n: int, **fixed: Any) -> None:
    """`n` deliveries cycling through states, channels and tiers (row i: STATES[i % 4],
    CHANNELS[i % 3], tier i % 2), row i changed at T0 + i seconds; counters to match."""
    rows = []
    for i in range(n):
        state, channel = STATES[i % 4], CHANNELS[i % 3]
        rows.append(
            {
                "broadcast_id": broadcast_id,
                "tier": i % 2,
                "channel": channel,
                "address": {"email": f"user{i}@example.com", "sms": f"+1415555{i:04d}"}.get(
                    channel, f"#room-{i}"
                ),
                "state": state,
                "attempts": 1,
                "sends": 1,
                "locale": "en",
                "created_at": T0,
                "updated_at": T0 + timedelta(seconds=i),
                "sent_at": T0 + timedelta(seconds=i) if state in ("sent", "delivered") else None,
                "last_error_code": "21211" if state == "failed" else None,
                **fixed,
            }
        )
    insert_rows(session, Delivery.__table__, rows)
    counts: dict[tuple[int, str, str], int] = {}
    for r in rows:
        key = (r["tier"], r["channel"], r["state"])
        counts[key] = counts.get(key, 0) + 1
    for (tier, channel, state), k in counts.items():
        session.add(BroadcastCount(broadcast_id=broadcast_id, tier=tier, channel=channel, state=state, n=k))
    session.flush()
