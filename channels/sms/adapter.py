"""SMS through Twilio's Messages API: one `messages.create` per recipient, many in flight.

Twilio has no batch send, so a batch is a bounded thread pool over one pooled client: the Twilio
client is stateless per call and its `requests.Session` is shared by the threads (urllib3's pool
is thread-safe; we size it to the pool so no connection is thrown away). Each message carries a
StatusCallback with its delivery id, so delivery reports find their row without a lookup by SID.

The rate-limit wait happens in the transport, the moment before the request goes on the wire: taken
before `messages.create`, the SDK's own work (milliseconds each, more with 16 threads on a busy
CPU) lay between the slot and the provider and bunched arrivals past Twilio's per-second limit.
With several sending numbers, the slot decides the sender: the transport writes the number whose
slot it got into the request's `From`. A Messaging Service sends with `MessagingServiceSid` instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from channels.base import (
    SLOT_HEADER,
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
    note_slot,
    noted_slot,
)
from channels.clients import (
    SANDBOX_TWILIO_ACCOUNT_SID,
    PerProcess,
    announce_mode,
    environment_once,
    executor,
    retry_after,
    sandbox_secret,
    send_each,
)
from channels.notice import Notice
from channels.rendering import Templates
from channels.sms.condense import SmsVariant, condense_sms
from config.settings import Settings

TWILIO_API = "https://api.twilio.com"
PROVIDER = "twilio"
# Twilio's message statuses that a receipt needs, as delivery states (queued, sending, accepted...
# say nothing new). The same words in status callbacks and in the Message resource.
TWILIO_STATES = {"sent": "sent", "delivered": "delivered", "undelivered": "undelivered", "failed": "failed"}
# Twilio error codes that mean the number must not be tried again (at send, in callbacks, in queries).
# 21610 is also the person's refusal (they texted STOP): such a send ends `suppressed`, not `failed`.
TWILIO_REASONS = {"21211": SuppressionReason.INVALID_NUMBER, "21610": SuppressionReason.OPTED_OUT}
# Twilio's client logs five INFO lines per request; at 30k messages that drowns the worker's log.
_twilio_log = logging.getLogger("channels.sms.twilio_http")
_twilio_log.setLevel(logging.WARNING)


class RoutedHttpClient(TwilioHttpClient):
    """Twilio's HTTP client, sending `https://api.twilio.com/...` to `base_url` instead (the sandbox
    or a configured proxy), with a connection pool as large as our concurrency, and remembering each
    thread's last response headers: TwilioRestException drops them, and 429's Retry-After is there."""

    def __init__(
        self, base_url: str | None, timeout: float, pool_size: int, *, stamp_slots: bool = False
    ) -> None:
        super().__init__(timeout=timeout, logger=_twilio_log)
        assert self.session is not None
        self._local = threading.local()
        adapter = PacedAdapter(
            self._local, stamp_slots=stamp_slots, pool_connections=4, pool_maxsize=max(pool_size, 4)
        )
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.proxy = environment_once(self.session, self.base_url or TWILIO_API)

    @contextmanager
    def paced(self, wait: Callable[[], str | None] | None) -> Iterator[None]:
        """This thread's next request waits on `wait` just before it is sent, and goes From the
        sender `wait` returns (None: as built)."""
        self._local.wait = wait
        try:
            yield
        finally:
            self._local.wait = None

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if self.base_url and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        self._local.headers = None
        response = super().request(method, url, *args, **kwargs)
        self._local.headers = response.headers
        return response

    def last_headers(self) -> Mapping[str, Any] | None:
        return getattr(self._local, "headers", None)


class PacedAdapter(HTTPAdapter):
    """requests' adapter, running the thread's pending rate-limit wait right before the send. To the
    sandbox only (`stamp_slots`), each request carries its slot's time, to measure arrival drift."""

    def __init__(self, local: threading.local, *, stamp_slots: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._local = local
        self._stamp = stamp_slots

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        wait = getattr(self._local, "wait", None)
        if wait is not None:
            self._local.wait = None  # one wait per message, not per redirect or retry
            note_slot(None)  # a slot noted by a throttle called elsewhere in this thread is not ours
            sender = wait()
            if sender is not None:
                _send_from(request, sender)
            slot = noted_slot()
            if self._stamp and slot is not None:
                request.headers[SLOT_HEADER] = f"{slot:.6f} {time.time():.6f}"
        return super().send(request, *args, **kwargs)


def _send_from(request: requests.PreparedRequest, sender: str) -> None:
    """Rewrites the form body's `From` (the SDK built it before the slot chose the number)."""
    body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
    fields = [(k, sender if k == "From" else v) for k, v in parse_qsl(body, keep_blank_values=True)]
    request.prepare_body(data=fields, files=None)


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
        self._client: PerProcess[tuple[Client, RoutedHttpClient]] = PerProcess(self._make_client)
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

    def _make_client(self) -> tuple[Client, RoutedHttpClient]:
        s = self.settings
        announce_mode(self.name, "Twilio", self.live, self.base_url or TWILIO_API)
        sandbox = not self.live and not s.twilio_base_url
        http = RoutedHttpClient(self.base_url, s.provider_timeout_s, s.send_concurrency, stamp_slots=sandbox)
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
        base = self.settings.public_url.rstrip("/")
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
        except requests.Timeout as exc:
            return Outcome.failed(recipient.delivery_id, Failure.RETRYABLE, code="timeout", error=str(exc))
        except (requests.RequestException, TwilioException, OSError) as exc:
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
            except (TwilioException, requests.RequestException, OSError) as exc:
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
