"""The one settings object. Read from the environment and an optional env file.

Secrets (provider credentials, webhook keys) come only from the environment: they are `SecretStr`,
never printed, and `describe()` masks them. Every setting is listed in the README with its default.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The vocabularies settings may name. Settings import nothing of the service, so they can be read
# first and by anything; the enums (channels.base.ChannelName, dispatcher.domain.message.EventKind and
# Impact) carry the same values, and tests/test_settings_vocabulary.py keeps them equal. StrEnum
# members equal and hash as their values, so these strings work as enum keys and in enum lookups.
ChannelKey = Literal["email", "chat", "sms", "social", "webhook"]
EventKey = Literal[
    "incident_opened",
    "incident_updated",
    "incident_resolved",
    "maintenance_scheduled",
    "maintenance_reminder",
    "maintenance_started",
    "maintenance_completed",
    "maintenance_cancelled",
    "maintenance_rescheduled",
]
ImpactKey = Literal["none", "minor", "major", "critical"]

SECRET_FIELDS = frozenset(
    {
        "sendgrid_api_key",
        "sendgrid_webhook_public_key",
        "twilio_account_sid",
        "twilio_auth_token",
        "slack_bot_token",
        "x_consumer_key",
        "x_consumer_secret",
        "x_access_token",
        "x_access_token_secret",
        "webhook_signing_secret",
        "api_keys",
        "sandbox_secret",
    }
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DISPATCHER_",
        env_file=os.environ.get("DISPATCHER_ENV_FILE"),
        extra="ignore",
        populate_by_name=True,
    )

    # where state lives
    data_dir: Path = Path(".dispatcher")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    redis_prefix: str = ""  # prefixes every Redis key (Celery's too): isolates tenants and test runs

    # HTTP
    public_url: str = "http://127.0.0.1:8000"  # how people and providers reach this service
    # How providers reach the status webhooks, when API processes of their own serve them (`up` does):
    # Twilio's StatusCallback is built on it and its signatures cover it. Unset: `public_url`.
    callback_url: str | None = None
    # Whether this API process applies the status reports its inbox keeps (dispatcher/engine/inbox.py).
    # Off in the processes that serve commanders while others serve `callback_url`: a flood's
    # bulk writes then never share a commander's process (issue 17: 1.8x -> 1.5x at the flood).
    apply_callbacks: bool = True
    max_body_bytes: int = 1_000_000
    api_keys: SecretStr | None = None  # DISPATCHER_API_KEYS="commander:key1,viewer:key2"
    sse_heartbeat_s: float = 15.0  # SSE heartbeat; a revoked key's open streams end within one

    # audience
    tiers: dict[str, int] = {"admins": 0, "stakeholders": 1, "customers": 2}
    default_tier: int = 2  # for a list not named in `tiers`
    tier_gate_timeout_s: float = 60.0
    tier_delay_s: dict[int, float] = {}
    failover_tiers: list[int] = [0]

    # channels
    channels_enabled: list[ChannelKey] = ["email", "chat", "sms", "social", "webhook"]
    templates_override_dir: Path | None = None
    sms_segment_budget: int = Field(default=1, ge=1, le=10)
    provider_timeout_s: float = 10.0
    send_concurrency: int = 16  # provider calls in flight per batch task

    # provider sandbox (used for every provider without credentials)
    sandbox_url: str = "http://127.0.0.1:8001"
    # The sandbox's per-run secret (`up` makes one and gives it to the sandbox and the service): its
    # account credential, and the only key its status webhooks are verified with.
    sandbox_secret: SecretStr | None = None

    # SendGrid
    sendgrid_api_key: SecretStr | None = None
    sendgrid_host: str | None = None  # defaults to the real API when a key is set, else the sandbox
    sendgrid_webhook_public_key: SecretStr | None = None
    email_from: str = "status@example.com"
    email_from_name: str = "Status"
    unsubscribe_url: str = "http://127.0.0.1:8000/unsubscribe"

    # Twilio
    twilio_account_sid: SecretStr | None = None
    twilio_auth_token: SecretStr | None = None
    # sending numbers: one, several comma-separated, or a JSON list; each has its own rate bucket
    twilio_from: str = "+15005550006"
    twilio_messaging_service_sid: str | None = None  # MG…: send through the service instead of From
    twilio_base_url: str | None = None

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_base_url: str | None = None

    # X
    x_consumer_key: SecretStr | None = None
    x_consumer_secret: SecretStr | None = None
    x_access_token: SecretStr | None = None
    x_access_token_secret: SecretStr | None = None
    x_base_url: str | None = None

    # outgoing webhook channel
    webhook_signing_secret: SecretStr = SecretStr("change-me-webhook-secret")

    # rate limits per provider account (requests or messages per second)
    rate_sendgrid_per_s: float = 10.0
    rate_twilio_per_s: float = 1.0  # per sending number (one long code: 1/s); raise for short codes
    rate_twilio_messaging_service_per_s: float = Field(default=1.0, gt=0)  # the service's own throughput
    rate_slack_per_channel_per_s: float = 1.0
    rate_x_per_window: int = 100
    rate_x_window_s: float = 900.0
    rate_webhook_per_s: float = 50.0
    # Pace under each limit: requests leave evenly spaced, but arrive bunched by up to ~250 ms of
    # scheduling and network jitter (measured on a loaded 2-core machine), and providers count arrivals.
    rate_headroom: float = Field(default=0.9, gt=0.1, le=1.0)
    # A batch takes only slots that start within this window and hands the rest back (no worker
    # sleeps through a limit); later tiers only slots within a quarter of it, so admins go first.
    rate_pace_window_s: float = Field(default=1.0, gt=0.0, le=10.0)

    # retries
    retry_max_attempts: int = 8
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    breaker_failures: int = 5
    breaker_open_s: float = 30.0
    lease_s: float = 120.0  # a row in `sending` longer than this is swept back to pending
    sweep_interval_s: float = 15.0
    # Receipts: a delivery still `sent` this long after sending (or after it was last asked about) is
    # asked about at its provider, so receipts converge when status callbacks are lost.
    reconcile_after_s: float = Field(default=600.0, gt=0)
    reconcile_batch: int = Field(default=100, ge=1, le=1000)  # rows asked about per channel per pass

    # per-channel update policy: channel -> event kinds it carries; a channel not named keeps its default
    channel_policy: dict[ChannelKey, list[EventKey]] = {}

    # scheduler (maintenance notices and update-cadence reminders, polled from the database)
    scheduler_poll_s: float = 5.0
    # A reminder that fell due more than this long ago (the service was down) is skipped, not sent
    # stale; start and end notices are always sent, marked late.
    scheduler_grace_s: float = 120.0
    maintenance_reminder_offsets_s: list[float] = [72 * 3600.0, 24 * 3600.0, 3600.0]
    maintenance_auto_transition: bool = True  # start/end notices move the status at the window's times

    # incident update cadence: commanders are reminded when an open incident goes this long unupdated
    update_cadence_s: dict[ImpactKey, float] = dict.fromkeys(get_args(ImpactKey), 1800.0)
    commander_contacts: list[str] = []  # emails and Slack channels (#name or C0123ABC) for reminders

    # languages (README "Languages and time zones"): what a reader whose locale we have no wording
    # for gets, and the one language of the public social post
    default_locale: str = "en"
    public_locale: str = "en"

    # compensation on long outages
    compensation_after_s: float = 4 * 3600.0
    compensation_tiers: list[int] = [1, 2]
    compensation_text: str = "Affected customers will be credited as set out in their service agreement."

    # subscribers' front door: public pages, double opt-in, abuse limits (README "Subscribers")
    service_name: str = "Service status"  # shown on the public pages and in confirmations
    support_contact: str = "support@example.com"  # an email address or URL shown on every page
    public_list: str = "customers"  # the list a confirmed self-service subscriber joins
    public_components: list[str] = []  # components offered on the pages; empty = free text
    signup_expiry_s: float = Field(default=48 * 3600.0, gt=0)  # a pending sign-up expires after this
    # requests per client address per hour on the public routes: POSTs (sign-up, confirm, manage)
    # and page views; an office behind one address signs up 10 people in 20 POSTs
    public_posts_per_hour: int = Field(default=30, ge=1)
    public_views_per_hour: int = Field(default=300, ge=1)
    # the public status page, feeds and Statuspage-compatible JSON (README "Status page"): components
    # as JSON [{"name","description","group","order"}] (empty = one per public_components name, else
    # one named after the service), how long clients may cache, and a generous per-client limit
    status_components: list[dict[str, Any]] = []
    status_max_age_s: int = Field(default=30, ge=0)
    status_requests_per_hour: int = Field(default=3600, ge=1)
    dashboard_session_ttl_s: int = Field(default=8 * 3600, ge=60)  # a dashboard sign-in lasts this long
    dashboard_sign_ins_per_hour: int = Field(default=20, ge=1)  # sign-in attempts per client address
    trusted_proxy_hops: int = Field(default=0, ge=0)  # our own proxies in front: X-Forwarded-For hops
    confirmations_per_address_per_day: int = Field(default=3, ge=1)  # per destination: no spam cannon
    # outgoing webhook URLs: https only unless allowed; private/loopback/metadata refused unless the
    # host is named here (the sandbox, in development)
    webhook_allow_http: bool = False
    webhook_allowed_hosts: list[str] = []
    webhook_suppress_after_s: float = Field(default=24 * 3600.0, gt=0)  # a receiver failing this long

    log_level: str = "INFO"

    @field_validator("twilio_from")
    @classmethod
    def _senders(cls, value: str) -> str:
        parse_senders(value)
        return value

    @field_validator("twilio_messaging_service_sid")
    @classmethod
    def _service_sid(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"MG[0-9a-fA-F]{32}", value.strip()):
            raise ValueError("twilio_messaging_service_sid must be MG followed by 32 hex digits")
        return value.strip() if value else None

    @property
    def twilio_from_numbers(self) -> tuple[str, ...]:
        """The sending numbers, in the order given (each has its own 1/s-style bucket)."""
        return parse_senders(self.twilio_from)

    @field_validator("default_locale", "public_locale")
    @classmethod
    def _language_tag(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*", value.strip()):
            raise ValueError(f"{value!r} is not a language tag (give one like en, de, pt-BR, ja)")
        return value.strip()

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def callback_base(self) -> str:
        """Where providers send their status webhooks, without a trailing slash."""
        return (self.callback_url or self.public_url).rstrip("/")

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'dispatcher.db'}"

    def describe(self) -> dict[str, Any]:
        """Settings as they may be shown: secrets reduced to set / unset."""
        shown: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if name in SECRET_FIELDS:
                shown[name] = "(set)" if value else "(unset)"
            else:
                shown[name] = str(value) if isinstance(value, Path) else value
        return shown


def parse_senders(value: str) -> tuple[str, ...]:
    """`+14155550100`, `+14155550100,+14155550101` or `["+14155550100", …]`: E.164 numbers (or a
    short code / alphanumeric sender ID), no duplicates. Raises ValueError naming the bad entry."""
    text = value.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"twilio_from is not a valid JSON list: {exc.msg}") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError("twilio_from must be a JSON list of strings")
    else:
        items = text.split(",")
    numbers = tuple(i.strip() for i in items if i.strip())
    if not numbers:
        raise ValueError("twilio_from needs at least one sending number")
    for number in numbers:
        if not SENDER.fullmatch(number):
            raise ValueError(f"twilio_from: {number!r} is not an E.164 number, short code or sender ID")
    if len(set(numbers)) != len(numbers):
        raise ValueError("twilio_from lists a number twice")
    return numbers


# E.164 (+ and up to 15 digits), a short code (5-6 digits) or an alphanumeric sender ID (up to 11).
SENDER = re.compile(r"\+[1-9]\d{6,14}|\d{5,6}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")


@lru_cache
def get_settings() -> Settings:
    return Settings()
