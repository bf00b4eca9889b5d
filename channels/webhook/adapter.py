"""The outgoing webhook channel: the variant's JSON payload POSTed, signed, to each subscriber URL.

One pooled `httpx.Client` per process (keep-alive across deliveries to the same receivers), calls
in flight bounded by `send_concurrency`. Redirects are not followed: a receiver that moved must be
re-registered, rather than have signed payloads forwarded to wherever a redirect points.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import httpx

from channels.base import ChannelName, Failure, Outcome, Recipient, RenderContext, Throttle, Variant
from channels.clients import PerProcess, announce_mode, executor, retry_after, send_each
from channels.notice import Notice
from channels.rendering import Templates
from channels.webhook.condense import WebhookVariant, condense_webhook
from channels.webhook.safe_url import CheckedConnections, problem, refused_connection
from channels.webhook.signing import sign_webhook
from config.settings import Settings


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the exact bytes that are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def checked_transport(
    settings: Settings, limits: httpx.Limits, resolver: Callable[[str, int], Sequence[str]] | None = None
) -> httpx.HTTPTransport:
    """An HTTP transport whose connections check their address as they are made (see
    channels/webhook/safe_url.py). httpx does not take a network backend, so its connection pool is
    given one; behind an egress proxy (HTTPS_PROXY) the proxy connects, and the check before each
    send is what remains."""
    import httpcore

    transport = httpx.HTTPTransport(limits=limits)
    if type(transport._pool) is httpcore.ConnectionPool:
        transport._pool._network_backend = CheckedConnections(settings, resolver)
    return transport


class WebhookChannel:
    name: ClassVar[ChannelName] = ChannelName.WEBHOOK
    max_batch: ClassVar[int] = 50

    @staticmethod
    def rate_per_s(settings: Settings) -> float:
        """Our own cap on outgoing webhook requests, over all receivers."""
        return settings.rate_webhook_per_s

    def __init__(self, settings: Settings, templates: Templates | None = None) -> None:
        self.settings = settings
        self.templates = templates
        self._client: PerProcess[httpx.Client] = PerProcess(self._make_client)
        self._pool = executor(self.settings.send_concurrency)

    def _make_client(self) -> httpx.Client:
        size = max(1, self.settings.send_concurrency)
        announce_mode(self.name, "webhook", True, "subscriber URLs")
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        return httpx.Client(
            transport=checked_transport(self.settings, limits),
            timeout=self.settings.provider_timeout_s,
            follow_redirects=False,
            headers={"User-Agent": "outage-dispatcher-webhook/1"},
        )

    def warm(self) -> None:
        """Builds this process's client now, so the first message of an outage pays no set-up."""
        self._client.get()

    def condense(self, message: Notice, ctx: RenderContext) -> Variant:
        return condense_webhook(message, ctx, templates=self.templates)

    def load_variant(self, data: dict[str, Any]) -> Variant:
        return WebhookVariant(**{**data, "channel": ChannelName(data["channel"])})

    def send(
        self, variant: Variant, recipients: Sequence[Recipient], throttle: Throttle | None = None
    ) -> list[Outcome]:
        body = encode_payload(cast(WebhookVariant, variant).payload)
        return send_each(self._pool.get(), recipients, lambda r: self._post(body, r), throttle)

    def _post(self, body: bytes, recipient: Recipient) -> Outcome:
        timestamp = int(time.time())
        secret = self.settings.webhook_signing_secret.get_secret_value()
        headers = {
            "Content-Type": "application/json",
            "X-Dispatcher-Timestamp": str(timestamp),
            "X-Dispatcher-Signature": sign_webhook(secret, timestamp, body),
            "X-Dispatcher-Delivery": str(recipient.delivery_id),
        }
        unsafe = problem(recipient.address, self.settings)  # again before each send: DNS may have moved
        if unsafe:
            return Outcome.failed(recipient.delivery_id, Failure.PERMANENT, code="unsafe_url", error=unsafe)
        try:
            response = self._client.get().post(recipient.address, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return Outcome.failed(recipient.delivery_id, Failure.RETRYABLE, code="timeout", error=str(exc))
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return Outcome.failed(recipient.delivery_id, Failure.PERMANENT, code="bad_url", error=str(exc))
        except httpx.HTTPError as exc:
            refused = refused_connection(exc)  # the host re-resolved to a refused address (rebinding)
            if refused:
                return Outcome.failed(
                    recipient.delivery_id, Failure.PERMANENT, code="unsafe_url", error=refused
                )
            return Outcome.failed(recipient.delivery_id, Failure.RETRYABLE, code="connection", error=str(exc))
        status = response.status_code
        if 200 <= status < 300:
            return Outcome.ok(recipient.delivery_id, response.headers.get("X-Request-Id"))
        # The status and its reason phrase only: never the body, which viewer keys could read back.
        error = f"HTTP {status} {response.reason_phrase}".strip()
        if status == 429:
            wait = retry_after(response.headers)
            return Outcome.failed(
                recipient.delivery_id, Failure.RATE_LIMITED, code="429", error=error, retry_after=wait
            )
        if status >= 500 or status == 408:
            return Outcome.failed(recipient.delivery_id, Failure.RETRYABLE, code=str(status), error=error)
        return Outcome.failed(recipient.delivery_id, Failure.PERMANENT, code=str(status), error=error)
