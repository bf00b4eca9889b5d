"""Subscribers and lists in the store: upsert one, import many, delete."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from config import Settings
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.store.models import Membership, Subscriber, SubscriberList


def ensure_lists(session: Session, settings: Settings, names: set[str]) -> dict[str, SubscriberList]:
    """The named lists, created on first use with their configured tier (else the default tier)."""
    found = {
        row.name: row for row in session.scalars(select(SubscriberList).where(SubscriberList.name.in_(names)))
    }
    for name in sorted(names - set(found)):
        row = SubscriberList(name=name, tier=settings.tiers.get(name, settings.default_tier))
        session.add(row)
        found[name] = row
    session.flush()
    return found


def _columns(item: SubscriberIn) -> dict[str, object]:
    return {
        "name": item.name,
        "org": item.org,
        "email": str(item.email).lower() if item.email else None,
        "phone": item.phone,
        "slack_channel": item.slack_channel,
        "webhook_url": str(item.webhook_url) if item.webhook_url else None,
        "channels": [c.value for c in item.channels],
        "components": list(item.components),
        "regions": list(item.regions),
        "opt_outs": [c.value for c in item.opt_outs],
        "locale": item.locale,
        "timezone": item.timezone,
        "quiet_hours": item.quiet_hours.model_dump(mode="json") if item.quiet_hours else None,
    }


def upsert(session: Session, settings: Settings, item: SubscriberIn) -> tuple[Subscriber, bool]:
    """Creates or replaces a subscriber by external id; returns it and whether it was created."""
    lists = ensure_lists(session, settings, set(item.lists))
    row = session.scalar(select(Subscriber).where(Subscriber.external_id == item.external_id))
    created = row is None
    if row is None:
        row = Subscriber(external_id=item.external_id, unsubscribe_token=secrets.token_urlsafe(24))
        session.add(row)
    for column, value in _columns(item).items():
        setattr(row, column, value)
    row.lists = [lists[name] for name in item.lists]
    session.flush()
    return row, created


def import_many(session: Session, settings: Settings, items: Sequence[SubscriberIn]) -> int:
    """Bulk insert of new subscribers (the fast path for large imports); existing ids are upserted."""
    lists = ensure_lists(session, settings, {name for item in items for name in item.lists})
    existing = set(
        session.scalars(
            select(Subscriber.external_id).where(Subscriber.external_id.in_([i.external_id for i in items]))
        )
    )
    fresh = [i for i in items if i.external_id not in existing]
    for item in items:
        if item.external_id in existing:
            upsert(session, settings, item)
    if fresh:
        rows = [
            {"external_id": i.external_id, "unsubscribe_token": secrets.token_urlsafe(24), **_columns(i)}
            for i in fresh
        ]
        session.execute(Subscriber.__table__.insert(), rows)
        ids = dict(
            session.execute(
                select(Subscriber.external_id, Subscriber.id).where(
                    Subscriber.external_id.in_([i.external_id for i in fresh])
                )
            ).all()
        )
        members = [
            {"subscriber_id": ids[i.external_id], "list_id": lists[n].id} for i in fresh for n in set(i.lists)
        ]
        session.execute(Membership.__table__.insert(), members)
    return len(items)


def remove(session: Session, external_id: str) -> bool:
    return bool(session.execute(delete(Subscriber).where(Subscriber.external_id == external_id)).rowcount)
