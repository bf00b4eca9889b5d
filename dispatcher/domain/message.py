"""The canonical outage message: the one thing a commander writes, every channel renders from it.

Pure: no I/O. Every channel variant is condensed from these fields, so no channel can say something
another contradicts.

Time zones: every timestamp must carry an offset. A naive timestamp ("14:00") is rejected rather
than guessed at, because a wrong guess would tell customers the wrong time during an outage. Accepted
timestamps are kept as UTC instants: Python compares two datetimes of the same zone by wall clock,
which gets windows across a DST change wrong; channels render them in the reader's zone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    model_validator,
)

from channels import locales
from dispatcher.domain.errors import TransitionError, ValidationFailed


class Kind(StrEnum):
    INCIDENT = "incident"
    MAINTENANCE = "maintenance"


class Status(StrEnum):
    # incident lifecycle
    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MONITORING = "monitoring"
    RESOLVED = "resolved"
    # maintenance lifecycle
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Impact(StrEnum):
    NONE = "none"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Impact).index(self)


INCIDENT_STATUSES = (Status.INVESTIGATING, Status.IDENTIFIED, Status.MONITORING, Status.RESOLVED)
MAINTENANCE_STATUSES = (
    Status.SCHEDULED,
    Status.IN_PROGRESS,
    Status.COMPLETED,
    Status.CANCELLED,
)
FINAL_STATUSES = frozenset({Status.RESOLVED, Status.COMPLETED, Status.CANCELLED})

# Incidents regress in real life (the fix did not hold), so the open states move freely among
# themselves; only leaving "resolved" needs an explicit reopen. Maintenance only moves forward.
_ALLOWED: dict[Status, frozenset[Status]] = {
    Status.INVESTIGATING: frozenset(INCIDENT_STATUSES),
    Status.IDENTIFIED: frozenset(INCIDENT_STATUSES),
    Status.MONITORING: frozenset(INCIDENT_STATUSES),
    Status.RESOLVED: frozenset({Status.RESOLVED}),
    Status.SCHEDULED: frozenset({Status.SCHEDULED, Status.IN_PROGRESS, Status.CANCELLED}),
    Status.IN_PROGRESS: frozenset({Status.IN_PROGRESS, Status.COMPLETED, Status.CANCELLED}),
    Status.COMPLETED: frozenset({Status.COMPLETED}),
    Status.CANCELLED: frozenset({Status.CANCELLED}),
}


def check_transition(current: Status, new: Status, *, reopen: bool = False) -> None:
    """Raise TransitionError unless `current -> new` is allowed.

    A resolved incident may go back to an open state only with `reopen=True`: customers who were
    told "resolved" must be told explicitly that it is broken again.
    """
    if new in _ALLOWED[current]:
        return
    if reopen and current is Status.RESOLVED and new in INCIDENT_STATUSES:
        return
    hint = " (pass reopen=true to reopen a resolved incident)" if current is Status.RESOLVED else ""
    raise TransitionError(current=current.value, new=new.value, hint=hint)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Instant = Annotated[AwareDatetime, AfterValidator(_utc)]


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def printable(value: str) -> str:
    """No control characters (tabs and line breaks aside): a NUL cannot even be stored in
    PostgreSQL, and the others would garble an SMS or a chat message."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


Plain = Annotated[str, AfterValidator(printable)]


def _no_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Text = Annotated[Plain, AfterValidator(_no_blank)]
ShortText = Annotated[Text, Field(max_length=500)]
Name = Annotated[Text, Field(max_length=100)]


class SupportContact(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    label: Name
    email: EmailStr | None = None
    phone: Annotated[Plain, Field(max_length=32)] | None = None
    url: HttpUrl | None = None

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        if not (self.email or self.phone or self.url):
            raise ValueError("a support contact needs an email, phone or url")
        return self


def _locale_tag(value: str) -> str:
    normal = locales.normalize(value)
    if normal is None:
        raise ValueError(f"{value!r} is not a language tag (give one like de, de-AT, pt-BR, ja)")
    return normal


LocaleTag = Annotated[str, AfterValidator(_locale_tag)]

# The fields a commander may give in other languages; the rest (times, impact, links) are facts.
TRANSLATABLE = (
    "title",
    "summary",
    "details",
    "cause",
    "workarounds",
    "data_safety",
    "compensation",
    "prevention",
)


class Translation(BaseModel):
    """The commander's own words in one language, under the same rules as the original. A field left
    out falls back to the original's, so a translation may cover only the title."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    title: Annotated[Text, Field(max_length=200)] | None = None
    summary: ShortText | None = None
    details: Annotated[Text, Field(max_length=20_000)] | None = None
    cause: ShortText | None = None
    workarounds: Annotated[list[ShortText], Field(max_length=10)] | None = None
    data_safety: ShortText | None = None
    compensation: ShortText | None = None
    prevention: ShortText | None = None


class OutageMessage(BaseModel):
    """What customers ask during an outage, answered once; see DESIGN.md for each field's why."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    title: Annotated[Text, Field(max_length=200)]
    kind: Kind = Kind.INCIDENT
    status: Status | None = None  # defaults to the first state of the kind's lifecycle
    impact: Impact = Impact.MINOR
    components: Annotated[list[Name], Field(max_length=50)] = []
    regions: Annotated[list[Name], Field(max_length=50)] = []
    summary: ShortText | None = None
    details: Annotated[Text, Field(max_length=20_000)] | None = None
    cause: ShortText | None = None
    workarounds: Annotated[list[ShortText], Field(max_length=10)] = []
    eta: Instant | None = None
    eta_confirmed: bool = False
    next_update_at: Instant | None = None
    data_safety: ShortText | None = None
    compensation: ShortText | None = None
    prevention: ShortText | None = None
    status_page_url: HttpUrl | None = None
    support_contacts: Annotated[list[SupportContact], Field(max_length=10)] = []
    starts_at: Instant | None = None  # maintenance window
    ends_at: Instant | None = None
    posted_at: Instant | None = None  # set by the service, never by the caller
    # the commander's own translations, by language tag (normalized: pt_br -> pt-BR); see localized()
    translations: Annotated[dict[LocaleTag, Translation], Field(max_length=30)] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        lifecycle = INCIDENT_STATUSES if self.kind is Kind.INCIDENT else MAINTENANCE_STATUSES
        if self.status is None:
            object.__setattr__(self, "status", lifecycle[0])
        elif self.status not in lifecycle:
            allowed = ", ".join(s.value for s in lifecycle)
            raise ValueError(
                f"status '{self.status.value}' is not a {self.kind.value} status; use one of: {allowed}"
            )
        if self.eta_confirmed and self.eta is None:
            raise ValueError("eta_confirmed is true but no eta is given")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.kind is Kind.MAINTENANCE and self.starts_at is None:
            raise ValueError("a maintenance message needs starts_at")
        return self

    @property
    def lifecycle_status(self) -> Status:
        assert self.status is not None  # set by the validator
        return self.status

    @property
    def is_final(self) -> bool:
        return self.lifecycle_status in FINAL_STATUSES

    def stamped(self, when: datetime | None = None) -> OutageMessage:
        """The message as posted: `posted_at` set by the service, in UTC."""
        return self.model_copy(update={"posted_at": (when or datetime.now(UTC)).astimezone(UTC)})

    def merged(self, changes: dict[str, object]) -> OutageMessage:
        """A follow-up message: the previous one with the commander's changes applied, re-validated.

        A translation must never say what the original no longer does: a field the update changes
        is dropped from every earlier translation, unless the update translates it anew (its
        `translations` replace the earlier ones language by language)."""
        data = self.model_dump(mode="json", exclude={"posted_at"}, exclude_none=False)
        before = {name: data.get(name) for name in TRANSLATABLE}
        new_translations = changes.get("translations")
        data.update({k: v for k, v in changes.items() if k != "translations"})
        changed = [name for name in TRANSLATABLE if name in changes and changes[name] != before[name]]
        kept: dict[str, dict[str, object]] = {}
        for tag, fields in (data.get("translations") or {}).items():
            still = {k: v for k, v in fields.items() if v is not None and k not in changed}
            if still:
                kept[tag] = still
        if isinstance(new_translations, dict):
            for tag, fields in new_translations.items():
                kept[locales.normalize(str(tag)) or str(tag)] = fields  # type: ignore[assignment]
        data["translations"] = kept
        return OutageMessage.model_validate(data)

    def localized(self, locale: str) -> OutageMessage:
        """The message a reader of `locale` gets: each translatable field from the closest of the
        commander's translations that has it (`de-AT` reads `de-AT`, then `de`, then another `de-*`),
        else the original. Pure; the result carries no translations of its own."""
        if not self.translations:
            return self
        parts = (locales.normalize(locale) or "").split("-")
        language = parts[0]
        nearest = ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
        nearest += sorted(t for t in self.translations if t.split("-")[0] == language and t not in nearest)
        found = [self.translations[t] for t in nearest if t in self.translations]
        update: dict[str, object] = {"translations": {}}
        for name in TRANSLATABLE:
            for translation in found:
                value = getattr(translation, name)
                if value is not None:
                    update[name] = value
                    break
        return self.model_copy(update=update)


class EventKind(StrEnum):
    """Which notice a broadcast is; chooses the template wording and the channel policy."""

    INCIDENT_OPENED = "incident_opened"
    INCIDENT_UPDATED = "incident_updated"
    INCIDENT_RESOLVED = "incident_resolved"
    MAINTENANCE_SCHEDULED = "maintenance_scheduled"
    MAINTENANCE_REMINDER = "maintenance_reminder"
    MAINTENANCE_STARTED = "maintenance_started"
    MAINTENANCE_COMPLETED = "maintenance_completed"
    MAINTENANCE_CANCELLED = "maintenance_cancelled"
    MAINTENANCE_RESCHEDULED = "maintenance_rescheduled"


class Publication(BaseModel):
    """How one message is published, apart from what it says: `notify: false` records it and shows it
    on the status page, the feeds and the JSON, but sends it to nobody (a correction, a typo fixed);
    `public: false` is an internal update, sent to `tiers` only (default: the first tier, the admins)
    and never shown on the status page, the feeds, the JSON or the social post.

    Not part of OutageMessage: it is not carried into the next update, each update chooses anew."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notify: bool = True
    public: bool = True
    tiers: Annotated[list[int], Field(min_length=1, max_length=20)] | None = None

    def checked(self, known_tiers: Sequence[int], *, opening: bool = False) -> Self:
        """Itself, if it makes sense for a service whose private tiers are `known_tiers`; else
        ValidationFailed naming the fields (a 422). Combinations that would reach nobody, or choose
        tiers that do not exist, are refused rather than silently sent to the wrong people."""
        if opening and not self.public:
            raise ValidationFailed(
                "an incident opens in public; post internal notes as updates with public: false",
                fields=["public"],
            )
        if not self.notify and not self.public:
            raise ValidationFailed(
                "an update that is neither public nor notified reaches nobody", fields=["notify", "public"]
            )
        if self.tiers is not None and self.public:
            raise ValidationFailed(
                "tiers choose who hears an internal update: set public to false too", fields=["tiers"]
            )
        unknown = sorted(set(self.tiers or ()) - set(known_tiers))
        if unknown:
            allowed = ", ".join(str(t) for t in known_tiers)
            raise ValidationFailed(
                f"no such tier: {', '.join(str(t) for t in unknown)} (tiers here: {allowed})",
                fields=["tiers"],
            )
        return self

    def internal_tiers(self, known_tiers: Sequence[int]) -> list[int]:
        """The tiers an internal update goes to: those chosen, else the first (the admins)."""
        return sorted(set(self.tiers)) if self.tiers else sorted(known_tiers)[:1]
