"""The one small interface every channel adapter implements.

An adapter does two things: `condense` (pure: a `Notice` -> this channel's variant) and
`send` (I/O: one variant to a batch of recipients through the provider's SDK, one outcome per
recipient). Everything the fan-out engine needs to know about a provider is in `Outcome`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from channels.notice import Notice

if TYPE_CHECKING:
    from config.settings import Settings


class ChannelName(StrEnum):
    EMAIL = "email"
    CHAT = "chat"
    SMS = "sms"
    SOCIAL = "social"
    WEBHOOK = "webhook"


@dataclass(frozen=True)
class RenderContext:
    """What a condenser needs besides the message: which notice, for whom, within which limits."""

    event: str  # the notice's event kind ("incident_opened", ...): picks the template wording
    locale: str = "en"
    timezone: str = "UTC"  # the reader's zone for displayed times; the offset is always shown
    sms_segment_budget: int = 1
    unsubscribe_url: str | None = None  # email footer and List-Unsubscribe; per-recipient token appended


class Recipient(NamedTuple):
    """One destination of one delivery. `address` is an email, E.164 number, Slack channel id,
    webhook URL, or "public" for the social post. (A NamedTuple: one is built per message.)"""

    delivery_id: int
    address: str
    name: str | None = None
    unsubscribe_token: str | None = None


class Failure(StrEnum):
    RETRYABLE = "retryable"  # 5xx, timeouts, connection errors: back off and try again
    RATE_LIMITED = "rate_limited"  # 429: try again after `retry_after`
    PERMANENT = "permanent"  # invalid/opted-out number, hard bounce, rejected content: final
    # (whether a final failure is the person's refusal, recorded as suppressed, is Outcome.suppression)
    NO_SLOT = "no_slot"  # not attempted: no rate-limit slot in the batch's window; handed back, not counted


class SuppressionReason(StrEnum):
    """Why an address must not be sent to again on its channel: what goes on the suppression list.
    Adapters and status parsers translate their provider's own codes into these (Outcome.suppression,
    StatusReport.suppression), so the engine records a reason without knowing any provider's code."""

    BOUNCE = "bounce"  # a hard bounce
    SPAM_REPORT = "spam_report"  # the person marked a message as spam
    DROPPED = "dropped"  # the provider refused it: an earlier bounce, unsubscribe or spam report
    INVALID_NUMBER = "invalid_number"  # not a number that can take messages
    OPTED_OUT = "opted_out"  # the person opted out at the provider (an SMS STOP)
    UNSUBSCRIBED = "unsubscribed"  # the person unsubscribed with us
    WEBHOOK_FAILING = "webhook_failing"  # a receiver that has failed too long (the engine decides)


# The reasons that are the person saying no: a send refused for one is final and ends `suppressed`,
# not `failed` (nothing went wrong; they asked for no more).
REFUSALS = frozenset({SuppressionReason.OPTED_OUT, SuppressionReason.UNSUBSCRIBED})


# The code of an outcome that failed on our side before the provider answered (the rate limiter's
# Redis unreachable, say): retried, but never held against the provider or the attempt cap.
INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class Outcome:
    """A provider's answer for one recipient: accepted with its message id, or a classified error."""

    delivery_id: int
    accepted: bool
    provider_message_id: str | None = None
    failure: Failure | None = None
    code: str | None = None  # the provider's own error code or HTTP status
    error: str | None = None
    retry_after: float | None = None  # seconds, when the provider said so
    # The provider's answer means this address must not be tried again (a SuppressionReason value)
    suppression: str | None = None

    @property
    def recipient_refused(self) -> bool:
        """The recipient refused further messages (opted out, unsubscribed): final, and recorded
        as `suppressed` rather than `failed`. The kind stays PERMANENT for the retry policy."""
        return self.suppression in REFUSALS

    @classmethod
    def ok(cls, delivery_id: int, provider_message_id: str | None) -> Outcome:
        return cls(delivery_id, True, provider_message_id=provider_message_id)

    @classmethod
    def no_slot(cls, delivery_id: int) -> Outcome:
        """The request was never made: the rate limit had no slot for it within the batch's window."""
        return cls(delivery_id, False, failure=Failure.NO_SLOT, code="no_slot")

    @classmethod
    def failed(
        cls,
        delivery_id: int,
        failure: Failure,
        *,
        code: str | None = None,
        error: str | None = None,
        retry_after: float | None = None,
        suppression: str | None = None,
    ) -> Outcome:
        return cls(
            delivery_id,
            False,
            failure=failure,
            code=code,
            error=error,
            retry_after=retry_after,
            suppression=suppression,
        )


@dataclass(frozen=True, kw_only=True)
class Variant:
    """A channel's rendering of one message. `text` is what a person reads as plain text (the SMS,
    the post, the chat fallback, the email's text part). Each channel subclasses this with its own
    typed fields (email subject and html, chat blocks, sms encoding and segments...)."""

    channel: ChannelName
    text: str

    def to_json(self) -> dict[str, Any]:
        """Stored once per broadcast, channel and locale; tasks load it back by id."""
        return asdict(self)


class StatusReport(NamedTuple):
    """What a provider says became of one message (a status callback, an event, or its answer to a
    status query), in the service's terms. The engine checks it against the delivery before applying:
    `delivery_id` is only a claim, `provider_message_id` must match what the send returned."""

    provider: str
    delivery_id: int | None
    provider_message_id: str | None
    state: str  # a delivery state: sent, delivered, bounced, undelivered, failed, suppressed
    error_code: str | None = None
    error: str | None = None
    suppression: str | None = None  # a SuppressionReason: the address goes on the suppression list


class Sent(NamedTuple):
    """A delivery the provider accepted, as a status query needs it."""

    delivery_id: int
    provider_message_id: str
    address: str


Throttle = Callable[[Recipient], None]


class NoSlot(Exception):
    """Raised by a Throttle: the provider's rate limit has no slot for this request within the
    batch's pacing window. The adapter makes no request and reports `Outcome.no_slot`; the engine
    hands the row back to run when its slot comes (no attempt, no failure)."""

    def __init__(self, bucket: str) -> None:
        super().__init__(f"no rate-limit slot in {bucket} within the pacing window")
        self.bucket = bucket


class SignatureMismatch(ValueError):
    """A provider's webhook whose signature is missing, wrong or stale, or that no key is configured
    to check. Raised by the providers' webhook checks (channels/<channel>/webhook.py), which know
    their provider's scheme; `header` names the request header at fault, for the API to report."""

    def __init__(self, message: str, header: str) -> None:
        super().__init__(message)
        self.header = header


# Sent to the provider sandbox only (never to a real API): "<slot> <sent>", the request's rate-limit
# slot and the moment it went on the wire, epoch seconds, so the sandbox can measure how far arrivals
# drift from their slots and how much of that is ours.
SLOT_HEADER = "X-Sandbox-Slot-At"
_slots = threading.local()


def note_slot(at: float | None) -> None:
    """The throttle says which slot (epoch seconds) this thread's next request was given."""
    _slots.at = at


def noted_slot() -> float | None:
    """The slot this thread's throttle last gave (once: reading it clears it)."""
    at: float | None = getattr(_slots, "at", None)
    _slots.at = None
    return at


Throttle = Callable[[Recipient], "str | None"]
"""Called by an adapter right before each provider request, with the request's first recipient.
The engine passes one that waits (at most about a second) for the global rate limit's slot (Redis)
and returns the sender that slot belongs to (a Twilio From number; None = the configured one), or
raises NoSlot."""


@runtime_checkable
class Channel(Protocol):
    name: ClassVar[ChannelName]
    max_batch: ClassVar[int]  # recipients per `send` call the provider accepts in one go

    @staticmethod
    def rate_per_s(settings: Settings) -> float:
        """The provider's request rate limit, per bucket (dispatcher/engine/ratelimit.py pools them),
        from the settings: the provider's fact, declared by its adapter."""
        ...

    def condense(self, message: Notice, ctx: RenderContext) -> Variant: ...

    def warm(self) -> None:
        """Builds the per-process SDK client ahead of the first send."""
        ...

    def load_variant(self, data: dict[str, Any]) -> Variant:
        """The inverse of `Variant.to_json`."""
        ...

    def send(
        self,
        variant: Variant,
        recipients: Sequence[Recipient],
        throttle: Throttle | None = None,
    ) -> list[Outcome]:
        """One outcome per recipient, in order. Never raises for a provider error: it classifies it."""
        ...
