"""One delivery's whole story, as its dashboard page tells it: every move with its time and cause,
every provider attempt with the provider's answer, the failover chain both ways, whether it may
have reached the recipient twice, and what the recipient got."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import Settings
from dispatcher.domain.errors import NotFound
from dispatcher.domain.masking import mask_address, mask_within
from dispatcher.domain.variant_key import VariantKey
from dispatcher.engine.variants import stored_variant
from dispatcher.reads.receipts import receipt_json
from dispatcher.reads.values import iso
from dispatcher.store.models import Delivery, DeliveryEvent, Subscriber


def delivery_story(
    session: Session, settings: Settings, delivery_id: int, *, mask: bool = True
) -> dict[str, Any]:
    """The story of `delivery_id`; addresses masked unless `mask` is False (an audited reveal)."""
    found = session.execute(
        select(Delivery, Subscriber.external_id)
        .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.id == delivery_id)
        .execution_options(populate_existing=True)
    ).first()
    if found is None:
        raise NotFound(f"delivery {delivery_id} not found", fields=["delivery_id"])
    delivery, external_id = found
    history = list(
        session.scalars(
            select(DeliveryEvent).where(DeliveryEvent.delivery_id == delivery_id).order_by(DeliveryEvent.id)
        )
    )

    def shown(message: str | None) -> str | None:
        """A provider's message as the story shows it: the address in it masked like the rest."""
        return mask_within(message, delivery.channel, delivery.address) if mask else message

    created = {
        "at": iso(delivery.created_at),
        "kind": "failover" if delivery.failover_of is not None else "planned",
        "from": None,
        "to": "pending",
        "code": None,
        "message": f"fails over from delivery {delivery.failover_of}" if delivery.failover_of else None,
    }
    events = [created] + [
        {
            "at": iso(e.at),
            "kind": e.kind,
            "from": e.from_state,
            "to": e.to_state,
            "code": e.code,
            "message": shown(e.message),
        }
        for e in history
    ]
    attempts = [
        {
            "n": e.attempt,
            "at": iso(e.at),
            "accepted": e.accepted,
            "code": e.code,
            "message": shown(e.message),
            "provider_message_id": e.provider_message_id,
        }
        for e in history
        if e.attempt is not None
    ]
    return {
        "delivery": receipt_json(delivery, external_id, mask=mask),
        "events": events,
        "attempts": attempts,
        "failover": _failover(session, delivery, mask=mask),
        "sends": delivery.sends,
        "resends": delivery.resends,  # deliberate copies a commander ordered: not duplicates
        "possible_duplicate": delivery.sends > 1 + delivery.resends,
        "variant": _variant(session, delivery, mask=mask),
    }


def _failover(session: Session, delivery: Delivery, *, mask: bool) -> dict[str, Any]:
    """`of`: the delivery this one replaced; `by`: those that replaced it; `chain`: the whole line
    from the first channel tried to the last. A failover stays with its person and broadcast, so
    one read of the subscriber's deliveries there (an index range) holds the chain."""
    if delivery.subscriber_id is None:
        rows = [delivery]
    else:
        rows = list(
            session.scalars(
                select(Delivery)
                .where(
                    Delivery.subscriber_id == delivery.subscriber_id,
                    Delivery.broadcast_id == delivery.broadcast_id,
                )
                .order_by(Delivery.id)
            )
        )
    by_id = {d.id: d for d in rows}
    children: dict[int, list[int]] = {}
    for d in rows:
        if d.failover_of is not None:
            children.setdefault(d.failover_of, []).append(d.id)
    root = delivery
    while root.failover_of is not None and root.failover_of in by_id:
        root = by_id[root.failover_of]
    chain, frontier = [], [root.id]
    while frontier:
        current = by_id[frontier.pop(0)]
        chain.append(
            {
                "delivery_id": current.id,
                "channel": current.channel,
                "address": mask_address(current.channel, current.address) if mask else current.address,
                "state": current.state,
                "failover_of": current.failover_of,
            }
        )
        frontier += children.get(current.id, [])
    return {"of": delivery.failover_of, "by": children.get(delivery.id, []), "chain": chain}


def _variant(session: Session, delivery: Delivery, *, mask: bool) -> dict[str, Any] | None:
    """The rendering this delivery was sent (the sender's own lookup, with its fallbacks), in the
    reader's language and zone, addressed to the recipient."""
    found = stored_variant(session, delivery.broadcast_id, delivery.channel, delivery.locale)
    if found is None:
        return None
    stored, content = found
    key = VariantKey.parse(stored)
    to = mask_address(delivery.channel, delivery.address) if mask else delivery.address
    return {
        "channel": delivery.channel,
        "locale": key.locale,
        "timezone": key.timezone,
        "to": to,
        "content": content,
    }
