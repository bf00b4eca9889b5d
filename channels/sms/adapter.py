"""SMS through Twilio's Messages API: one `messages.create` per recipient, many in flight.

Twilio has no batch send, so a batch is a bounded thread pool over one client: the Twilio client
is stateless per call and its transport (`transport.PacedTransport`, urllib3's thread-safe pool
sized to the send threads) is shared by the threads. Each message carries a StatusCallback with
its delivery id, so delivery reports find their row without a lookup by SID.

The rate-limit wait happens in the transport, the moment before the request goes on the wire, and
with several sending numbers the slot decides the sender there. A Messaging Service sends with
`MessagingServiceSid` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar
from urllib.parse import urlencode

from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.rest import Client
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from channels.base import (
    ChannelName,
    Failure,
    Outcome,
    Recipient,
    RenderContext,
    Sent,
    StatusReport,
    SuppressionReason,
    Throttle,
    Variant,
)
from channels.clients import (
    SANDBOX_TWILIO_ACCOUNT_SID,
    PerProcess,
    announce_mode,
    executor,
    retry_after,
    sandbox_secret,
    send_each,
)
from channels.notice import Notice
from channels.rendering import Templates
from channels.sms.condense import SmsVariant, condense_sms
from channels.sms.transport import TWILIO_API, PacedTransport
from config.settings import Settings

PROVIDER = "twilio"
# Twilio's message statuses that a receipt needs, as delivery states (queued, sending, accepted...
# say nothing new). The same words in status callbacks and in the Message resource.
TWILIO_STATES = {"sent": "sent", "delivered": "delivered", "undelivered": "undelivered", "failed": "failed"}
# Twilio error codes that mean the number must not be tried again (at send, in callbacks, in queries).
# 21610 is also the person's refusal (they texted STOP): such a send ends `suppressed`, not `failed`.
TWILIO_REASONS = {"21211": SuppressionReason.INVALID_NUMBER, "21610": SuppressionReason.OPTED_OUT}
_twilio_log = logging.getLogger("channels.sms.twilio_http")


class SmsChannel:
    name: ClassVar[ChannelName] = ChannelName.SMS
    # Twilio has no batch call: this is messages per task. Two workers' batches at the rate limit
    # share its slots and finish together, leaving Twilio idle while both record and claim; 250
    # (not 100) makes that happen a third as often (limits benchmark: 34.3 s -> 32.9 s).
    max_batch: ClassVar[int] = 250

    @staticmethod
    def rate_per_s(settings: Settings) -> float:
        """Twilio's message rate: a Messaging Service's own throughput when one sends, else each
        sending number's (a long code takes 1/s; the pool of numbers multiplies it)."""
        if settings.twilio_messaging_service_sid:
            return settings.rate_twilio_messaging_service_per_s
        return settings.rate_twilio_per_s

    def __init__(self, settings: Settings, templates: Templates | None = None) -> None:
        self.settings = settings
        self.templates = templates
        self._client: PerProcess[tuple[Client, PacedTransport]] = PerProcess(self._make_client)
        self._pool = executor(self.settings.send_concurrency)

    @property
    def live(self) -> bool:
        s = self.settings
        return s.twilio_account_sid is not None and s.twilio_auth_token is not None

    @property
    def base_url(self) -> str | None:
        """Where requests go instead of api.twilio.com; None for the real API."""
        if self.settings.twilio_base_url:
            return self.settings.twilio_base_url
        return None if self.live else self.settings.sandbox_url

    def _make_client(self) -> tuple[Client, PacedTransport]:
        s = self.settings
        announce_mode(self.name, "Twilio", self.live, self.base_url or TWILIO_API)
        sandbox = not self.live and not s.twilio_base_url
        http = PacedTransport(self.base_url, s.provider_timeout_s, s.send_concurrency, stamp_slots=sandbox)
        if self.live:
            assert s.twilio_account_sid is not None and s.twilio_auth_token is not None
            sid, token = s.twilio_account_sid.get_secret_value(), s.twilio_auth_token.get_secret_value()
        else:
            sid, token = SANDBOX_TWILIO_ACCOUNT_SID, sandbox_secret(s)
        return Client(sid, token, http_client=http), http

    def warm(self) -> None:
        """Builds this process's client now, so the first message of an outage pays no set-up."""
        client, _ = self._client.get()
        _ = client.messages  # twilio imports its API domains on first use

    def condense(self, message: Notice, ctx: RenderContext) -> Variant:
        return condense_sms(message, ctx, templates=self.templates)

    def load_variant(self, data: dict[str, Any]) -> Variant:
        return SmsVariant(**{**data, "channel": ChannelName(data["channel"])})

    def status_callback(self, recipient: Recipient) -> str:
        base = self.settings.callback_base
        return f"{base}/v1/webhooks/twilio?{urlencode({'delivery_id': recipient.delivery_id})}"

    def send(
        self, variant: Variant, recipients: Sequence[Recipient], throttle: Throttle | None = None
    ) -> list[Outcome]:
        _, http = self._client.get()

        def one(recipient: Recipient) -> Outcome:
            with http.paced(partial(throttle, recipient) if throttle is not None else None):
                return self._send_one(variant.text, recipient)

        return send_each(self._pool.get(), recipients, one, None)

    def _send_one(self, body: str, recipient: Recipient) -> Outcome:
        client, http = self._client.get()
        try:
            service = self.settings.twilio_messaging_service_sid
            first = self.settings.twilio_from_numbers[0]  # the transport puts in the slot's number
            sender = {"messaging_service_sid": service} if service else {"from_": first}
            message = client.messages.create(
                to=recipient.address,
                body=body,
                status_callback=self.status_callback(recipient),
                **sender,
            )
        except TwilioRestException as exc:
            return _classify(recipient.delivery_id, exc.status, exc.code, str(exc.msg), http.last_headers())
        except TwilioServiceException as exc:
            detail = str(exc.detail or exc.title)
            return _classify(recipient.delivery_id, exc.status, exc.code, detail, http.last_headers())
        except NewConnectionError as exc:  # urllib3 files it under connect timeouts too
            return Outcome.failed(recipient.delivery_id, Failure.RETRYABLE, code="connection", error=str(exc))
        except Urllib3Timeout as exc:
            return Outcome.failed(recipient.delivery_id, Failure.RETRYABLE, code="timeout", error=str(exc))
        except (HTTPError, TwilioException, OSError) as exc:
            return Outcome.failed(recipient.delivery_id, Failure.RETRYABLE, code="connection", error=str(exc))
        return Outcome.ok(recipient.delivery_id, message.sid)

    # status: callbacks and the Message resource ------------------------------------------------------
    provider: ClassVar[str] = PROVIDER

    @staticmethod
    def same_message(recorded: str, reported: str) -> bool:
        """A report is about our message when its MessageSid is the SID `messages.create` returned."""
        return recorded == reported

    def fetch_statuses(
        self, sent: Sequence[Sent], throttle: Callable[[], None] | None = None
    ) -> list[StatusReport]:
        """Asks Twilio for each message (`messages(sid).fetch()`, one request each, paced by `throttle`);
        a message Twilio does not know or cannot answer for now is left out, to be asked again later."""
        client, _ = self._client.get()
        reports: list[StatusReport] = []
        for row in sent:
            if throttle is not None:
                throttle()
            try:
                message = client.messages(row.provider_message_id).fetch()
            except (TwilioException, HTTPError, OSError) as exc:
                _twilio_log.warning("status of delivery %s: no answer from Twilio: %s", row.delivery_id, exc)
                continue
            code = str(message.error_code) if message.error_code else None
            report = _report(row.delivery_id, message.sid, str(message.status or ""), code)
            if report is not None:
                reports.append(report)
        return reports


def status_callback_report(delivery_id: Any, params: Mapping[str, str]) -> StatusReport | None:
    """A Twilio status callback (form fields) as a report; None for statuses a receipt ignores.
    `delivery_id` is the one in the callback URL we gave Twilio."""
    try:
        ident: int | None = int(str(delivery_id))
    except (TypeError, ValueError):
        ident = None
    return _report(
        ident, params.get("MessageSid") or None, params.get("MessageStatus", ""), params.get("ErrorCode")
    )


def _report(delivery_id: int | None, sid: str | None, status: str, code: str | None) -> StatusReport | None:
    state = TWILIO_STATES.get(status.lower())
    if state is None:
        return None
    code = code or None
    error = f"twilio error {code}" if code else None
    return StatusReport(PROVIDER, delivery_id, sid, state, code, error, TWILIO_REASONS.get(code or ""))


def _classify(
    delivery_id: int, status: int, code: int | None, error: str, headers: Mapping[str, Any] | None
) -> Outcome:
    """Twilio's own code when it gave one (21211 invalid number, 21610 opted out, 21614 not a mobile):
    any 4xx is final for this message; 429 waits; 5xx is Twilio's trouble, not the number's. The
    first two also put the number on the suppression list (TWILIO_REASONS)."""
    shown = str(code) if code else str(status)
    reason = TWILIO_REASONS.get(str(code)) if code else None
    if status == 429:
        wait = retry_after(headers)
        return Outcome.failed(
            delivery_id, Failure.RATE_LIMITED, code=shown, error=error, retry_after=wait, suppression=reason
        )
    if status >= 500 or status == 408:
        return Outcome.failed(delivery_id, Failure.RETRYABLE, code=shown, error=error, suppression=reason)
    return Outcome.failed(delivery_id, Failure.PERMANENT, code=shown, error=error, suppression=reason)
