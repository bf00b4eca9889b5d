"""Email through SendGrid v3 `/mail/send`: up to 1,000 personalizations per request.

Each recipient is one personalization carrying its delivery id (custom_args, echoed back in every
Event Webhook event), its one-click List-Unsubscribe headers, and `%unsubscribe_url%` substituted
with its own link. A request is all-or-nothing: its recipients share one outcome and one
X-Message-Id.

SendGrid rejects a whole request (400) when an address appears twice in it. A batch holding the
same address twice (two deliveries for one person, e.g. a retry next to a first attempt) is split:
the second occurrence goes out in a further request, so every delivery still gets sent.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, cast
from urllib.parse import quote

import python_http_client.exceptions as sg_errors
from sendgrid import SendGridAPIClient

from channels.base import (
    ChannelName,
    Failure,
    NoSlot,
    Outcome,
    Recipient,
    RenderContext,
    Sent,
    StatusReport,
    SuppressionReason,
    Throttle,
    Variant,
)
from channels.clients import PerProcess, announce_mode, retry_after, sandbox_secret
from channels.email.condense import EmailVariant, condense_email
from channels.notice import Notice
from channels.rendering import Templates
from config.settings import Settings

SENDGRID_API = "https://api.sendgrid.com"
PROVIDER = "sendgrid"
log = logging.getLogger(__name__)
# Event Webhook events a receipt needs, as delivery states (opens, clicks, deferrals say nothing new).
SENDGRID_EVENTS = {
    "processed": "sent",
    "delivered": "delivered",
    "bounce": "bounced",
    "blocked": "bounced",
    "dropped": "suppressed",  # SendGrid refused it: an earlier bounce, unsubscribe or spam report
}
# Event Webhook events that mean "never again": a hard bounce, a spam complaint, SendGrid's own drop.
# (A `spamreport` event makes no report yet: SENDGRID_EVENTS has no delivery state for it.)
SENDGRID_REASONS = {
    "bounce": SuppressionReason.BOUNCE,
    "spamreport": SuppressionReason.SPAM_REPORT,
    "dropped": SuppressionReason.DROPPED,
}
# Email Activity API summary statuses (`processed` says nothing new).
ACTIVITY_STATES = {"delivered": "delivered", "not_delivered": "bounced"}


def send_id(sg_message_id: str) -> str:
    """The X-Message-Id `/mail/send` returned, from an event's or activity's per-recipient
    `sg_message_id` / `msg_id` (`<X-Message-Id>.<filter and recipient part>`)."""
    return sg_message_id.split(".", 1)[0]


def _error_code(name: str, event: Mapping[str, Any]) -> str:
    """The event's name, except a `blocked` bounce: temporary, the receiving server may take it later."""
    return "blocked" if name == "bounce" and event.get("type") == "blocked" else name


def event_reports(events: Iterable[Mapping[str, Any]]) -> list[StatusReport]:
    """Event Webhook events as reports (their `delivery_id` is the custom arg we sent along)."""
    reports = []
    for event in events:
        name = str(event.get("event", "")).lower()
        state = SENDGRID_EVENTS.get(name)
        if state is None:
            continue
        try:
            ident: int | None = int(str(event.get("delivery_id")))
        except (TypeError, ValueError):
            ident = None
        reason = event.get("reason") or event.get("response")
        code = _error_code(name, event) if state in ("bounced", "suppressed") else None
        reports.append(
            StatusReport(
                PROVIDER,
                ident,
                str(event["sg_message_id"]) if event.get("sg_message_id") else None,
                state,
                code,
                str(reason)[:2000] if reason and state != "delivered" else None,
                SENDGRID_REASONS.get(code or ""),
            )
        )
    return reports


UNSUBSCRIBE_PLACEHOLDER = "%unsubscribe_url%"
MANAGE_PLACEHOLDER = "%manage_url%"


def unsubscribe_link(base: str, token: str | None) -> str:
    return f"{base}?token={quote(token, safe='')}" if token else base


def manage_link(unsubscribe_base: str, token: str | None) -> str:
    """The subscriber's manage page, beside the unsubscribe endpoint (same secret token)."""
    if not unsubscribe_base.endswith("/unsubscribe"):
        return unsubscribe_link(unsubscribe_base, token)
    return unsubscribe_link(unsubscribe_base[: -len("unsubscribe")] + "manage", token)


def split_requests(recipients: Sequence[Recipient], size: int) -> list[list[Recipient]]:
    """Requests of at most `size` recipients with every address once per request (case-insensitive):
    the n-th occurrence of an address goes in the n-th round; order is kept within a round."""
    rounds: list[list[Recipient]] = []
    seen: dict[str, int] = {}
    for recipient in recipients:
        key = recipient.address.strip().lower()
        index = seen.get(key, 0)
        seen[key] = index + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(recipient)
    return [r[i : i + size] for r in rounds for i in range(0, len(r), size)]


class EmailChannel:
    name: ClassVar[ChannelName] = ChannelName.EMAIL
    max_batch: ClassVar[int] = 1000

    @staticmethod
    def rate_per_s(settings: Settings) -> float:
        """SendGrid's request rate for the account (one request carries up to `max_batch` people)."""
        return settings.rate_sendgrid_per_s

    def __init__(self, settings: Settings, templates: Templates | None = None) -> None:
        self.settings = settings
        self.templates = templates
        self._client: PerProcess[SendGridAPIClient] = PerProcess(self._make_client)

    @property
    def live(self) -> bool:
        return self.settings.sendgrid_api_key is not None

    @property
    def host(self) -> str:
        if self.settings.sendgrid_host:
            return self.settings.sendgrid_host.rstrip("/")
        return SENDGRID_API if self.live else self.settings.sandbox_url.rstrip("/")

    def _make_client(self) -> SendGridAPIClient:
        key = self.settings.sendgrid_api_key
        announce_mode(self.name, "SendGrid", self.live, self.host)
        api_key = key.get_secret_value() if key is not None else sandbox_secret(self.settings)
        return SendGridAPIClient(api_key=api_key, host=self.host)

    def warm(self) -> None:
        """Builds this process's client now, so the first message of an outage pays no set-up."""
        self._client.get()

    def condense(self, message: Notice, ctx: RenderContext) -> Variant:
        return condense_email(message, ctx, templates=self.templates)

    def load_variant(self, data: dict[str, Any]) -> Variant:
        return EmailVariant(**{**data, "channel": ChannelName(data["channel"])})

    def send(
        self, variant: Variant, recipients: Sequence[Recipient], throttle: Throttle | None = None
    ) -> list[Outcome]:
        email = cast(EmailVariant, variant)
        outcomes: dict[int, Outcome] = {}
        for request in split_requests(recipients, self.max_batch):
            try:
                if throttle is not None:
                    throttle(request[0])
            except NoSlot:  # no slot in this batch's window: this request (and the rest) go back
                answers = [Outcome.no_slot(r.delivery_id) for r in request]
            else:
                answers = self._send_request(email, request)
            for recipient, outcome in zip(request, answers, strict=True):
                outcomes[id(recipient)] = outcome
        return [outcomes[id(r)] for r in recipients]

    def body(self, variant: EmailVariant, recipients: Sequence[Recipient]) -> dict[str, Any]:
        """The `/mail/send` request body for one request's recipients."""
        settings = self.settings
        content = [{"type": "text/plain", "value": variant.text}]
        if variant.html:
            content.append({"type": "text/html", "value": variant.html})
        personalizations = []
        for r in recipients:
            link = unsubscribe_link(settings.unsubscribe_url, r.unsubscribe_token)
            to: dict[str, str] = {"email": r.address}
            if r.name:
                to["name"] = r.name
            personalizations.append(
                {
                    "to": [to],
                    "custom_args": {"delivery_id": str(r.delivery_id)},
                    "headers": {
                        "List-Unsubscribe": f"<{link}>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                    },
                    "substitutions": {
                        UNSUBSCRIBE_PLACEHOLDER: link,
                        MANAGE_PLACEHOLDER: manage_link(settings.unsubscribe_url, r.unsubscribe_token),
                    },
                }
            )
        return {
            "personalizations": personalizations,
            "from": {"email": settings.email_from, "name": settings.email_from_name},
            "subject": variant.subject,
            "content": content,
        }

    def _send_request(self, variant: EmailVariant, recipients: Sequence[Recipient]) -> list[Outcome]:
        client = self._client.get()
        try:
            response = client.client.mail.send.post(
                request_body=self.body(variant, recipients), timeout=self.settings.provider_timeout_s
            )
        except sg_errors.HTTPError as exc:
            return [_classify_http_error(r.delivery_id, exc) for r in recipients]
        except (OSError, http.client.HTTPException) as exc:
            # URLError, socket timeouts, refused / reset connections: transient by nature
            timeout = isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
            code = "timeout" if timeout else "connection"
            return [
                Outcome.failed(r.delivery_id, Failure.RETRYABLE, code=code, error=str(exc))
                for r in recipients
            ]
        message_id = response.headers.get("X-Message-Id")
        return [Outcome.ok(r.delivery_id, message_id) for r in recipients]

    # status: Event Webhook events and the Email Activity API ------------------------------------------
    provider: ClassVar[str] = PROVIDER

    @staticmethod
    def same_message(recorded: str, reported: str) -> bool:
        """A report is about our message when its per-recipient id starts with our X-Message-Id."""
        return send_id(reported) == recorded

    def fetch_statuses(
        self, sent: Sequence[Sent], throttle: Callable[[], None] | None = None
    ) -> list[StatusReport]:
        """Asks the Email Activity API once per send request (`GET /v3/messages?query=msg_id LIKE
        "<X-Message-Id>.%"`, paced by `throttle`) and matches its entries to our rows by address.
        A request SendGrid cannot answer for now is left out, to be asked again later."""
        client = self._client.get()
        by_send: dict[str, list[Sent]] = defaultdict(list)
        for row in sent:
            by_send[row.provider_message_id].append(row)
        reports: list[StatusReport] = []
        for message_id, rows in by_send.items():
            if throttle is not None:
                throttle()
            query = {"query": f'msg_id LIKE "{message_id}.%"', "limit": self.max_batch}
            try:
                response = client.client.messages.get(
                    query_params=query, timeout=self.settings.provider_timeout_s
                )
                found = json.loads(response.body or b"{}").get("messages") or []
            except (sg_errors.HTTPError, OSError, http.client.HTTPException, ValueError) as exc:
                log.warning("status of SendGrid message %s: no answer: %s", message_id, exc)
                continue
            by_address = {str(m.get("to_email", "")).lower(): m for m in found if isinstance(m, dict)}
            for row in rows:
                entry = by_address.get(row.address.lower())
                state = ACTIVITY_STATES.get(str(entry.get("status"))) if entry else None
                if entry is None or state is None:
                    continue
                code = "not_delivered" if state == "bounced" else None
                reports.append(
                    StatusReport(PROVIDER, row.delivery_id, str(entry.get("msg_id") or ""), state, code)
                )
        return reports


def _error_text(exc: sg_errors.HTTPError) -> str:
    try:
        errors = exc.to_dict.get("errors") or []
        return "; ".join(str(e.get("message")) for e in errors) or str(exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def _classify_http_error(delivery_id: int, exc: sg_errors.HTTPError) -> Outcome:
    status = int(exc.status_code)
    error = _error_text(exc)
    if status == 429:
        return Outcome.failed(
            delivery_id,
            Failure.RATE_LIMITED,
            code="429",
            error=error,
            retry_after=retry_after(exc.headers),
        )
    if status >= 500 or status == 408:
        return Outcome.failed(delivery_id, Failure.RETRYABLE, code=str(status), error=error)
    return Outcome.failed(delivery_id, Failure.PERMANENT, code=str(status), error=error)
