"""Database tables. Runs on PostgreSQL and SQLite alike; Alembic migrations mirror this file."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dispatcher.domain.states import BroadcastState, DeliveryState, TierState


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, returns aware UTC: SQLite would otherwise hand back naive datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the database; every timestamp must be aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
Id = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: Json,
        list[Any]: Json,
    }


class SubscriberList(Base):
    __tablename__ = "subscriber_lists"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    tier: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    # the planner reads a tier's members in subscriber order, list by list
    __table_args__ = (Index("ix_memberships_list_subscriber", "list_id", "subscriber_id"),)

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    list_id: Mapped[int] = mapped_column(
        ForeignKey("subscriber_lists.id", ondelete="CASCADE"), primary_key=True
    )


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    org: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    slack_channel: Mapped[str | None] = mapped_column(String(100))
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    channels: Mapped[list[Any]] = mapped_column(default=list)  # preference order
    components: Mapped[list[Any]] = mapped_column(default=list)  # empty = everything
    regions: Mapped[list[Any]] = mapped_column(default=list)
    opt_outs: Mapped[list[Any]] = mapped_column(default=list)
    locale: Mapped[str] = mapped_column(String(20), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    quiet_hours: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    unsubscribe_token: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    lists: Mapped[list[SubscriberList]] = relationship(secondary="memberships", lazy="selectin")


class Incident(Base):
    """An incident or a maintenance: the thing updates and broadcasts hang off."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    impact: Mapped[str] = mapped_column(String(20))
    message: Mapped[dict[str, Any]]  # the current canonical message
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_update_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    # when commanders were last reminded that an update is due (compare-and-set by the scheduler)
    last_reminded_at: Mapped[datetime | None]

    updates: Mapped[list[IncidentUpdate]] = relationship(
        back_populates="incident", order_by="IncidentUpdate.seq", lazy="selectin"
    )


class IncidentUpdate(Base):
    __tablename__ = "incident_updates"
    __table_args__ = (UniqueConstraint("incident_id", "seq"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[dict[str, Any]]
    posted_at: Mapped[datetime] = mapped_column(default=utcnow)
    # silent publish: notify=False is shown but sent to nobody; public=False is sent to `tiers`
    # only and never shown on the status page, the feeds, the JSON or the social post
    notify: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    public: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    tiers: Mapped[list[int] | None] = mapped_column(Json, nullable=True)

    incident: Mapped[Incident] = relationship(back_populates="updates")


class Broadcast(Base):
    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # None for a service notice to one address (a subscription confirmation), which has no incident
    incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True, nullable=True
    )
    update_id: Mapped[int | None] = mapped_column(ForeignKey("incident_updates.id", ondelete="SET NULL"))
    event: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20), default=BroadcastState.QUEUED.value)  # BroadcastState
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)  # channels per this update
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    planned_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    # Given when the broadcast is recorded, so its first answer is built without reading them back;
    # never loaded lazily: everything else reads tiers and gates with queries of its own.
    tiers: Mapped[list[BroadcastTier]] = relationship(
        order_by="BroadcastTier.tier", lazy="raise", passive_deletes=True
    )
    gates: Mapped[list[BroadcastGate]] = relationship(
        order_by="(BroadcastGate.tier, BroadcastGate.channel)", lazy="raise", passive_deletes=True
    )


class BroadcastTier(Base):
    """One tier of a broadcast: the gate that releases the next tier lives here."""

    __tablename__ = "broadcast_tiers"

    broadcast_id: Mapped[int] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    tier: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(20), default=TierState.PLANNING.value)  # TierState
    planned: Mapped[int] = mapped_column(Integer, default=0)
    outstanding: Mapped[int] = mapped_column(Integer, default=0)  # not yet accepted nor final
    gate: Mapped[str | None] = mapped_column(String(20))  # how the next tier was released
    started_at: Mapped[datetime | None]
    dispatched_through: Mapped[int | None] = mapped_column(Id)  # highest delivery id enqueued
    first_accepted_at: Mapped[datetime | None]
    all_accepted_at: Mapped[datetime | None]


class BroadcastGate(Base):
    """One tier of a broadcast on one channel: when its sends there started, and how and when its
    gate there opened (which releases the next tier on that channel). The rule: dispatcher/domain/gates.py."""

    __tablename__ = "broadcast_gates"

    broadcast_id: Mapped[int] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    tier: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    started_at: Mapped[datetime | None]
    dispatched_through: Mapped[int | None] = mapped_column(Id)  # highest delivery id enqueued
    opened_by: Mapped[str | None] = mapped_column(String(20))  # accepted / timeout
    opened_at: Mapped[datetime | None]


class BroadcastVariant(Base):
    """A channel's rendering for one broadcast and variant key (language, zone, credit:
    dispatcher/domain/variant_key.py): rendered once, read by every batch."""

    __tablename__ = "broadcast_variants"

    broadcast_id: Mapped[int] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    locale: Mapped[str] = mapped_column(String(100), primary_key=True)  # the variant key
    variant: Mapped[dict[str, Any]]


class BroadcastCount(Base):
    """Progress kept current as deliveries move, so reading it is never a COUNT over every row."""

    __tablename__ = "broadcast_counts"

    broadcast_id: Mapped[int] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    tier: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)


class BroadcastSends(Base):
    """The deliveries' `sends`, summed per tier and channel, so progress shows them without a scan.
    A table of its own, written last in every transaction that writes it: on the tier row, a claim
    (counters, then tier) and a recording (tier, then counters) would wait on each other."""

    __tablename__ = "broadcast_sends"

    broadcast_id: Mapped[int] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    tier: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    sends: Mapped[int] = mapped_column(Integer, default=0)
    extra_sends: Mapped[int] = mapped_column(Integer, default=0)  # beyond each delivery's first


class Delivery(Base):
    """One message to one address on one channel in one broadcast: a row with a state machine."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint(
            "broadcast_id", "channel", "address", name="uq_deliveries_broadcast_channel_address"
        ),
        Index("ix_deliveries_broadcast_tier_state", "broadcast_id", "tier", "state"),
        Index("ix_deliveries_state_lease", "state", "lease_until"),
        # receipts filtered by state, in id order (the first page of `failed` at 100k rows)
        Index("ix_deliveries_broadcast_state_id", "broadcast_id", "state", "id"),
        # receipts searched by subscriber (`q` = an external_id); also what ON DELETE SET NULL reads
        Index("ix_deliveries_subscriber_broadcast", "subscriber_id", "broadcast_id"),
        # a broadcast's receipts in id order, unfiltered or by channel alone: without it the first page
        # walks the primary key past every older broadcast's rows (benchmarks/dashboard.py)
        Index("ix_deliveries_broadcast_id", "broadcast_id", "id"),
        # receipts filtered by time (`since`/`until` on the last change)
        Index("ix_deliveries_broadcast_updated", "broadcast_id", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"))
    tier: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(2000))
    locale: Mapped[str] = mapped_column(String(100), default="en")  # the variant key it reads
    state: Mapped[str] = mapped_column(String(20), default=DeliveryState.PENDING.value)  # DeliveryState
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    last_error_code: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    failover_of: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    # Sends the service allowed that may have reached the recipient: raised by every claim (in its
    # transaction), lowered only when the provider refused that send. More than one = a duplicate.
    sends: Mapped[int] = mapped_column(Integer, default=0)
    # Of those, the deliberate resends a commander ordered (POST /v1/deliveries/{id}/resend): copies
    # beyond the first that are not accidents. A possible duplicate is `sends > 1 + resends`.
    resends: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    claim: Mapped[str | None] = mapped_column(String(32))  # the current claim's token (see sending)
    lease_until: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sending_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    final_at: Mapped[datetime | None]  # failed / bounced / undelivered / suppressed
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryEvent(Base):
    """A delivery's history, append-only: every state move with its time and why (`kind`: `claim`,
    `attempt`, `provider_report`, `lease_expired`, ...), a provider attempt's answer on the move it
    caused. Written in the transaction of the move, in bulk (dispatcher/engine/transitions.py)."""

    __tablename__ = "delivery_events"
    __table_args__ = (Index("ix_delivery_events_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(20))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    code: Mapped[str | None] = mapped_column(String(100))
    message: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int | None] = mapped_column(Integer)  # the attempt number, on a provider's answer
    accepted: Mapped[bool | None] = mapped_column(Boolean)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))


class ScheduledNotice(Base):
    """A maintenance notice due at a time; the scheduler polls and claims these (no long ETAs)."""

    __tablename__ = "scheduled_notices"
    __table_args__ = (Index("ix_scheduled_notices_state_due", "state", "due_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(40))
    due_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(
        String(20), default="pending"
    )  # pending/claimed/sent/withdrawn/skipped
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcasts.id", ondelete="SET NULL"))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; the key is never stored
    prefix: Mapped[str] = mapped_column(String(12))  # shown in listings so a key can be recognised
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    scope: Mapped[str] = mapped_column(String(200))  # method + path + api key
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditEntry(Base):
    """One write through the API or the CLI: who (a key's display prefix and role, or `cli`), what,
    on which target, the answer's status, from where, with the request id. Never a key, never a
    body: bodies may hold addresses."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_actor_id", "actor", "id"),
        Index("ix_audit_log_action_id", "action", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(40))  # `od_AbCdE`, `cli`, or `unknown` (no valid key)
    role: Mapped[str | None] = mapped_column(String(20))
    key_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: the entry outlives the key
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[int] = mapped_column(Integer)
    client: Mapped[str | None] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(64))


class Suppression(Base):
    """An address we must not send to on a channel (hard bounce, spam report, carrier opt-out...):
    sending to it again costs the sender's reputation, so planning records `suppressed` instead."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("channel", "address", name="uq_suppressions_channel_address"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(2000))  # normalised as planning writes it
    reason: Mapped[str] = mapped_column(String(40))  # bounce / spamreport / dropped / invalid_number / ...
    detail: Mapped[str | None] = mapped_column(String(200))  # a short provider reason, never a body
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Signup(Base):
    """A self-service sign-up waiting for its confirmation. Not a subscriber until confirmed, so
    nobody unconfirmed can be planned into a broadcast; only the token's hash is stored."""

    __tablename__ = "signups"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(20))  # where the confirmation went: email or sms
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    channels: Mapped[list[Any]] = mapped_column(default=list)
    components: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    confirmed_at: Mapped[datetime | None]


class StatusSnapshot(Base):
    """The public status page's last snapshot (one row, id 1): what /status, the feeds and the
    Statuspage-compatible JSON serve, kept here so every API process can serve it, and kept in
    process so they can go on serving it while this database is unreachable."""

    __tablename__ = "status_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[dict[str, Any]]
    etag: Mapped[str] = mapped_column(String(64))  # a digest of the body: changes when it does
    generated_at: Mapped[datetime] = mapped_column(default=utcnow)
