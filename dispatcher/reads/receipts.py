"""Per-recipient receipts of one broadcast: filtered, searched, cursor-paged by delivery id.

Every filter's first page is an index range read, so it stays fast at 100k rows (see the indexes on
`deliveries` in dispatcher/store/models.py and tests/test_reads_indexes.py):
- `state`, `channel`, `tier`: the broadcast's rows in id order, the filter checked on the way;
- `q`: an exact subscriber `external_id` (through the subscriber's index on deliveries) or an exact
  address, normalised the way subscribers are stored (an email's case, a phone's formatting), looked up
  in the (broadcast, channel, address) key;
- `since` / `until`: the row's last change (`updated_at`: a state move, a retry scheduled, a status
  query), through the (broadcast, updated_at) index.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import phonenumbers
from sqlalchemy import ColumnElement, Select, and_, false, or_, select
from sqlalchemy.orm import Session

from channels.base import ChannelName
from dispatcher.domain.audience import normalise_address
from dispatcher.domain.errors import NotFound, ValidationFailed
from dispatcher.domain.masking import mask_address, mask_within
from dispatcher.domain.states import DeliveryState
from dispatcher.reads.paging import decode_cursor, next_cursor
from dispatcher.reads.values import iso, one_of, page_limit
from dispatcher.store.bulk import id_in
from dispatcher.store.models import Broadcast, Delivery, Subscriber

CURSOR_KIND = "d"
MAX_Q = 2000


def receipt_json(d: Delivery, external_id: str | None, *, mask: bool = True) -> dict[str, Any]:
    """One delivery as the receipts list shows it; the address masked unless `mask` is False."""
    return {
        "delivery_id": d.id,
        "subscriber": external_id,
        "channel": d.channel,
        "address": mask_address(d.channel, d.address) if mask else d.address,
        "tier": d.tier,
        "state": d.state,
        "provider_message_id": d.provider_message_id,
        "attempts": d.attempts,
        "last_error_code": d.last_error_code,
        "last_error": mask_within(d.last_error, d.channel, d.address) if mask else d.last_error,
        "failover_of": d.failover_of,
        "sends": d.sends,  # sends that may have reached the recipient, deliberate resends included
        "resends": d.resends,  # of `sends`, the deliberate resends a commander ordered
        "possible_duplicate": d.sends > 1 + d.resends,  # more copies than the first and those resends
        "created_at": iso(d.created_at),
        "sending_at": iso(d.sending_at),
        "sent_at": iso(d.sent_at),
        "delivered_at": iso(d.delivered_at),
        "final_at": iso(d.final_at),
        "updated_at": iso(d.updated_at),
    }


def address_candidates(q: str) -> list[tuple[str, str]]:
    """The (channel, stored address) pairs a search text could be: an email lower-cased, a phone
    number in E.164 whatever its spaces and dashes, a Slack channel or URL as typed."""
    text = q.strip()
    found: list[tuple[str, str]] = []
    if "@" in text:
        found.append((ChannelName.EMAIL.value, normalise_address(ChannelName.EMAIL, text)))
    if any(c.isdigit() for c in text):
        phone = _e164(text)
        if phone is not None:
            found.append((ChannelName.SMS.value, phone))
    if "@" not in text:
        found += [(ChannelName.CHAT.value, text), (ChannelName.WEBHOOK.value, text)]
    return found


def _e164(text: str) -> str | None:
    """A typed phone number (`+44 7700 900123`, `1-415-555-0100`) as stored: E.164, as subscribers'
    numbers are (dispatcher/domain/subscribers.py), or None if it is no phone number at all."""
    try:
        parsed = phonenumbers.parse(text if text.startswith("+") else f"+{text}", None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _search(session: Session, q: str) -> ColumnElement[bool]:
    if not q.strip() or len(q) > MAX_Q:
        raise ValidationFailed(f"q must be 1 to {MAX_Q} characters", fields=["q"])
    subscriber_ids = list(session.scalars(select(Subscriber.id).where(Subscriber.external_id == q.strip())))
    terms = [and_(Delivery.channel == c, Delivery.address == a) for c, a in address_candidates(q)]
    if subscriber_ids:
        terms.append(Delivery.subscriber_id == subscriber_ids[0])
    return or_(*terms) if terms else false()


def _utc(value: datetime, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationFailed(f"{field} must be an ISO 8601 time", fields=[field])
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def receipts_query(
    session: Session,
    broadcast_id: int,
    *,
    state: str | None = None,
    channel: str | None = None,
    tier: int | None = None,
    q: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int = 0,
    limit: int = 100,
) -> Select[Any]:
    """The SELECT of one page (`limit + 1` deliveries after id `after`): what `receipts` runs,
    and what tests/reads/test_indexes.py asks PostgreSQL to EXPLAIN."""
    wanted_state = one_of(state, DeliveryState, "state")
    wanted_channel = one_of(channel, ChannelName, "channel")
    query = (
        select(Delivery)
        .where(Delivery.broadcast_id == broadcast_id, Delivery.id > after)
        .order_by(Delivery.id)
        .limit(limit + 1)
        .execution_options(populate_existing=True)
    )
    if wanted_state is not None:
        query = query.where(Delivery.state == wanted_state.value)
    if wanted_channel is not None:
        query = query.where(Delivery.channel == wanted_channel.value)
    if tier is not None:
        query = query.where(Delivery.tier == tier)
    if q is not None:
        query = query.where(_search(session, q))
    if since is not None:
        query = query.where(Delivery.updated_at >= _utc(since, "since"))
    if until is not None:
        query = query.where(Delivery.updated_at < _utc(until, "until"))
    return query


def receipts(
    session: Session,
    broadcast_id: int,
    *,
    state: str | None = None,
    channel: str | None = None,
    tier: int | None = None,
    q: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
    mask: bool = True,
) -> dict[str, Any]:
    """A page of the broadcast's receipts in delivery id order; `since` is inclusive, `until`
    exclusive, both on the row's last change (`updated_at`). Naive times are taken as UTC."""
    limit = page_limit(limit)
    after = decode_cursor(cursor, CURSOR_KIND) if cursor else 0
    query = receipts_query(
        session,
        broadcast_id,
        state=state,
        channel=channel,
        tier=tier,
        q=q,
        since=since,
        until=until,
        after=after,
        limit=limit,
    )
    if session.get(Broadcast, broadcast_id) is None:
        raise NotFound(f"broadcast {broadcast_id} not found", fields=["broadcast_id"])
    rows = list(session.scalars(query))
    page = rows[:limit]
    names = external_ids(session, {d.subscriber_id for d in page if d.subscriber_id is not None})
    return {
        "broadcast_id": broadcast_id,
        "receipts": [receipt_json(d, names.get(d.subscriber_id or 0), mask=mask) for d in page],
        "next_cursor": next_cursor(CURSOR_KIND, [d.id for d in rows], limit),
    }


def external_ids(session: Session, subscriber_ids: set[int]) -> dict[int, str]:
    """The page's subscribers by primary key, read after the page: joining them into the page's
    query let PostgreSQL hash-join the whole subscribers table for a filter matching many rows."""
    if not subscriber_ids:
        return {}
    found = session.execute(
        select(Subscriber.id, Subscriber.external_id).where(id_in(session, Subscriber.id, subscriber_ids))
    )
    return {subscriber_id: external_id for subscriber_id, external_id in found}
