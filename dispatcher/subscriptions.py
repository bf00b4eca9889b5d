"""Self-service subscribers: one-click unsubscribe, double opt-in, the manage page, SMS keywords.

- A sign-up is a `Signup` row, not a subscriber, until its owner confirms it: planning only reads
  subscribers, so nobody unconfirmed can be sent a notice, and re-subscribing an existing address
  changes nothing until confirmed. Only a SHA-256 of the confirmation token is stored.
- The confirmation goes out through the engine, as a one-recipient notice broadcast (no incident):
  it gets the engine's rate limits, retries, receipts and suppression list.
- A subscriber's secret link token (`unsubscribe_token`, in every email's List-Unsubscribe and
  footer links) opens their unsubscribe and manage pages; it is compared in constant time and
  never logged (the access log writes paths, never query strings).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from channels.base import ChannelName
from config import Settings
from dispatcher.domain.states import BroadcastState, DeliveryState, TierState
from dispatcher.engine import suppressions
from dispatcher.engine.clock import utcnow
from dispatcher.engine.deliveries import delivery_row, insert_one
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.tier_gates import add_gates, try_dispatch
from dispatcher.engine.transitions import bump_counts
from dispatcher.store.models import (
    Broadcast,
    BroadcastTier,
    BroadcastVariant,
    Signup,
    Subscriber,
)
from dispatcher.store.subscribers import ensure_lists

CONFIRMATION_EVENT = "subscription_confirmation"
SELF_PREFIX = "self-"  # external ids of subscribers who signed up themselves
SIGNUP_CHANNELS = (ChannelName.EMAIL, ChannelName.SMS)
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP"})


_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,200}$")  # what secrets.token_urlsafe makes


def well_formed(token: str | None) -> bool:
    """Anything else is not one of ours, and is not worth a query (nor a NUL byte sent to it)."""
    return bool(token and _TOKEN.match(token))


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def find_by_link_token(session: Session, token: str | None) -> Subscriber | None:
    """The subscriber whose secret link token this is, or None. The stored token is compared with
    `hmac.compare_digest`, so the answer's timing says nothing about how much of a guess was right."""
    if not well_formed(token):
        return None
    assert token is not None
    row = session.scalar(select(Subscriber).where(Subscriber.unsubscribe_token == token))
    if row is None or not hmac.compare_digest(row.unsubscribe_token.encode(), token.encode()):
        return None
    return row


def unsubscribe(session: Session, settings: Settings, sub: Subscriber, outbox: Outbox) -> int:
    """Opts the subscriber out of email at once, including their deliveries of broadcasts in flight
    that have not left yet; returns how many of those were withdrawn."""
    suppressions.opt_out(session, sub.id, ChannelName.EMAIL)
    return len(
        suppressions.withdraw_pending(session, settings, sub.id, ChannelName.EMAIL, "unsubscribed", outbox)
    )


# ---- sign-up and confirmation ---------------------------------------------------------------


@dataclass(frozen=True)
class SignupRequest:
    """A validated sign-up: at least one address, the channels to confirm, the components."""

    email: str | None
    phone: str | None
    channels: tuple[ChannelName, ...]
    components: tuple[str, ...]


def start_signup(
    session: Session, settings: Settings, request: SignupRequest, outbox: Outbox, *, allowed: Any
) -> list[str]:
    """Records a pending sign-up per chosen channel and sends each its confirmation (unless the
    address is suppressed or `allowed(channel, address)` says its confirmation budget is spent).
    Returns the channels a confirmation went to (for tests; the HTTP answer never says)."""
    now = utcnow()
    session.execute(delete(Signup).where(Signup.expires_at < now, Signup.confirmed_at.is_(None)))
    sent: list[str] = []
    for channel in request.channels:
        address = request.email if channel is ChannelName.EMAIL else request.phone
        if address is None:
            continue
        if suppressions.is_suppressed(session, channel, address) or not allowed(channel, address):
            continue
        token = secrets.token_urlsafe(24)
        session.add(
            Signup(
                token_hash=digest(token),
                channel=channel.value,
                email=request.email if channel is ChannelName.EMAIL else None,
                phone=request.phone if channel is ChannelName.SMS else None,
                channels=[channel.value],
                components=list(request.components),
                created_at=now,
                expires_at=now + timedelta(seconds=settings.signup_expiry_s),
            )
        )
        send_notice(
            session, settings, channel, address, confirmation_variant(settings, channel, token), outbox
        )
        sent.append(channel.value)
    return sent


def confirmation_variant(settings: Settings, channel: ChannelName, token: str) -> dict[str, Any]:
    """The confirmation message itself: a link by email, a YES reply by SMS."""
    from channels.email.condense import EmailVariant
    from channels.sms.condense import SmsVariant
    from channels.sms.segments import measure

    name = settings.service_name
    if channel is ChannelName.SMS:
        text = f"{name}: reply YES to get status notices by SMS. Ignore this to not subscribe. HELP for help."
        length = measure(text)
        return SmsVariant(text=text, encoding=str(length.encoding), segments=length.segments).to_json()
    link = confirm_url(settings, token)
    hours = round(settings.signup_expiry_s / 3600)
    text = (
        f"Someone, hopefully you, asked to get {name} notices at this address.\n\n"
        f"Confirm here (the link works for {hours} hours): {link}\n\n"
        f"If it was not you, ignore this email: nothing will be sent. Questions: {settings.support_contact}\n"
    )
    body = (
        f"<p>Someone, hopefully you, asked to get {html.escape(name)} notices at this address.</p>"
        f'<p><a href="{html.escape(link)}">Confirm your subscription</a>'
        f" (the link works for {hours} hours).</p>"
        f"<p>If it was not you, ignore this email: nothing will be sent.</p>"
    )
    return EmailVariant(text=text, subject=f"Confirm your {name} subscription"[:200], html=body).to_json()


def public_base(settings: Settings) -> str:
    """Where subscribers reach the public pages: beside the advertised unsubscribe URL."""
    base = settings.unsubscribe_url
    return base[: -len("/unsubscribe")] if base.endswith("/unsubscribe") else settings.public_url.rstrip("/")


def confirm_url(settings: Settings, token: str) -> str:
    return f"{public_base(settings)}/subscribe/confirm?token={token}"


def send_notice(
    session: Session,
    settings: Settings,
    channel: ChannelName,
    address: str,
    variant: dict[str, Any],
    outbox: Outbox,
) -> int:
    """A one-recipient broadcast with no incident, planned here and dispatched through the engine
    (urgent queue: a person waiting for a confirmation should not wait behind a big broadcast)."""
    now = utcnow()
    broadcast = Broadcast(
        incident_id=None,
        event=CONFIRMATION_EVENT,
        state=BroadcastState.SENDING,
        policy={"channels": [channel.value], "notice": True},
        planned_at=now,
    )
    session.add(broadcast)
    session.flush()
    session.add(
        BroadcastTier(broadcast_id=broadcast.id, tier=0, state=TierState.PLANNED, planned=1, outstanding=1)
    )
    add_gates(session, broadcast.id, [0])  # its one tier's per-channel gates, as every broadcast has
    session.add(
        BroadcastVariant(broadcast_id=broadcast.id, channel=channel.value, locale="en", variant=variant)
    )
    session.flush()
    insert_one(session, delivery_row(broadcast.id, 0, channel, address, None, "en", now))
    from collections import Counter

    bump_counts(session, Counter({(broadcast.id, 0, channel.value, DeliveryState.PENDING.value): 1}))
    session.flush()
    try_dispatch(session, settings, broadcast.id, 0, outbox)
    return broadcast.id


def pending_signup(session: Session, token: str | None, now: datetime | None = None) -> Signup | None:
    """The unexpired, unconfirmed sign-up this token confirms (looked up by its hash)."""
    if not well_formed(token):
        return None
    assert token is not None
    row = session.scalar(select(Signup).where(Signup.token_hash == digest(token)))
    if row is None or row.confirmed_at is not None or row.expires_at <= (now or utcnow()):
        return None
    return row


def confirm(session: Session, settings: Settings, signup: Signup) -> Subscriber | None:
    """Confirms a sign-up (compare-and-set, so a double click confirms once) and creates or updates
    the subscriber for its address: the public list, the chosen components, the channel opted in."""
    now = utcnow()
    won = session.execute(
        update(Signup)
        .where(Signup.id == signup.id, Signup.confirmed_at.is_(None), Signup.expires_at > now)
        .values(confirmed_at=now)
    ).rowcount
    if not won:
        return None
    channel = ChannelName(signup.channel)
    if channel is ChannelName.EMAIL:
        address = (signup.email or "").lower()
        sub = session.scalar(select(Subscriber).where(Subscriber.email == address).order_by(Subscriber.id))
    else:
        address = signup.phone or ""
        sub = session.scalar(select(Subscriber).where(Subscriber.phone == address).order_by(Subscriber.id))
    lists = ensure_lists(session, settings, {settings.public_list})
    if sub is None:
        sub = Subscriber(
            external_id=SELF_PREFIX + digest(f"{channel.value}:{address}")[:24],
            unsubscribe_token=secrets.token_urlsafe(24),
            email=address if channel is ChannelName.EMAIL else None,
            phone=address if channel is ChannelName.SMS else None,
            channels=[channel.value],
            components=list(signup.components),
            regions=[],
            opt_outs=[],
            locale="en",
            timezone="UTC",
        )
        session.add(sub)
        sub.lists = [lists[settings.public_list]]
    else:
        sub.components = list(signup.components)
        sub.opt_outs = [c for c in (sub.opt_outs or []) if c != channel.value]
        if sub.channels and channel.value not in sub.channels:
            sub.channels = [*sub.channels, channel.value]
        if settings.public_list not in {lst.name for lst in sub.lists}:
            sub.lists = [*sub.lists, lists[settings.public_list]]
    session.flush()
    return sub


# ---- the manage page ----------------------------------------------------------------------------


def manage(
    session: Session,
    settings: Settings,
    sub: Subscriber,
    *,
    channels: list[ChannelName],
    components: list[str],
    leave: bool,
    outbox: Outbox,
) -> None:
    """A subscriber's own changes: which of their channels to hear on, which components; or leave
    (every channel opted out; pending deliveries withdrawn)."""
    reachable = [c for c in SIGNUP_CHANNELS if (sub.email if c is ChannelName.EMAIL else sub.phone)]
    kept = set() if leave else {c.value for c in channels if c in reachable}
    dropped = {c.value for c in reachable} - kept
    sub.opt_outs = sorted((set(sub.opt_outs or []) | dropped) - kept)
    if sub.channels:
        sub.channels = [c for c in sub.channels if c not in dropped] + sorted(kept - set(sub.channels))
    if not leave:
        sub.components = components
    session.flush()
    for channel in reachable:
        if channel.value in sub.opt_outs:
            suppressions.withdraw_pending(session, settings, sub.id, channel, "unsubscribed", outbox)


# ---- SMS keywords -------------------------------------------------------------------------------


def sms_keyword(session: Session, settings: Settings, phone: str, body: str, outbox: Outbox) -> str | None:
    """What an inbound SMS asks for, done; returns the reply text (None: no reply)."""
    word = body.strip().upper().split()[0] if body.strip() else ""
    subs = list(session.scalars(select(Subscriber).where(Subscriber.phone == phone)))
    name = settings.service_name
    if word in STOP_WORDS:
        for sub in subs:
            suppressions.opt_out(session, sub.id, ChannelName.SMS)
            suppressions.withdraw_pending(session, settings, sub.id, ChannelName.SMS, "unsubscribed", outbox)
        suppressions.record(session, ChannelName.SMS, phone, "opted_out", f"keyword {word}")
        return f"{name}: you will get no more messages. Reply START to get them again."
    if word in START_WORDS:
        for sub in subs:
            sub.opt_outs = [c for c in (sub.opt_outs or []) if c != ChannelName.SMS.value]
        session.execute(
            delete(suppressions.Suppression).where(
                suppressions.Suppression.channel == ChannelName.SMS.value,
                suppressions.Suppression.address == phone,
                suppressions.Suppression.reason == "opted_out",
            )
        )
        return f"{name}: you will get status messages again. Reply STOP to stop."
    if word == "HELP":
        return f"{name} status notices. Help: {settings.support_contact}. Reply STOP to stop."
    if word == "YES":
        signup = session.scalar(
            select(Signup)
            .where(
                Signup.phone == phone,
                Signup.channel == ChannelName.SMS.value,
                Signup.confirmed_at.is_(None),
                Signup.expires_at > utcnow(),
            )
            .order_by(Signup.id.desc())
            .limit(1)
        )
        if signup is not None and confirm(session, settings, signup) is not None:
            return f"{name}: you are subscribed. Reply STOP to stop, HELP for help."
        return None
    return None
