"""The Twilio SDK's HTTP client, on urllib3's connection pool directly.

Twilio's SDK lets a caller bring its own `HttpClient` (its `request()` takes the method, URL, form
fields, headers and basic auth, and returns status, body and headers). Its default one builds a
`requests` Request, prepares it, merges session settings and builds a `requests` Response for
every message: 60% of an SMS send thread's CPU in a py-spy run of an SMS-only broadcast, against
about 20% for the request on the wire. This one sends the SDK's request as it is, on one
thread-safe urllib3 pool sized to the send threads.

It also owns the rate-limit wait, the moment before the request goes on the wire: taken before
`messages.create`, the SDK's own work lay between the slot and the provider and bunched arrivals
past Twilio's per-second limit. With several sending numbers the slot decides the sender, so the
wait runs before the form is encoded and its `From` is the slot's number.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import certifi
import urllib3
from requests.utils import get_environ_proxies
from twilio.http import HttpClient
from twilio.http.response import Response

from channels.base import SLOT_HEADER, note_slot, noted_slot

TWILIO_API = "https://api.twilio.com"
FORM = "application/x-www-form-urlencoded"
JSON_TYPES = ("application/json", "application/scim+json")

# One wait per message: it returns the sender the slot chose (None: as the SDK built it).
Wait = Callable[[], str | None]


class PacedTransport(HttpClient):
    """Twilio's requests, sent to `base_url` instead of api.twilio.com when one is given (the
    sandbox or a configured proxy), each after its thread's pending rate-limit wait. Keeps each
    thread's last response headers: TwilioRestException drops them, and a 429's Retry-After is
    there. To the sandbox only (`stamp_slots`), each request carries its slot's time, so the
    sandbox can measure how far arrivals drift from their slots."""

    def __init__(
        self,
        base_url: str | None,
        timeout: float,
        pool_size: int,
        *,
        stamp_slots: bool = False,
    ) -> None:
        super().__init__(logging.getLogger("channels.sms.twilio_http"), False, timeout)
        self.base_url = base_url.rstrip("/") if base_url else None
        self._stamp = stamp_slots
        self._local = threading.local()
        self._auth: dict[tuple[str, str], str] = {}
        # The environment's proxy and CA bundle, read once: requests' `trust_env` walked os.environ
        # twice per message (proxies, then no_proxy).
        self.proxy = get_environ_proxies(self.base_url or TWILIO_API) or None
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self.ca_bundle = bundle or certifi.where()
        self.timeouts = urllib3.Timeout(connect=timeout, read=timeout)
        pool: dict[str, Any] = {"num_pools": 4, "maxsize": max(pool_size, 4), "ca_certs": self.ca_bundle}
        scheme = "https" if (self.base_url or TWILIO_API).startswith("https") else "http"
        via = (self.proxy or {}).get(scheme) or (self.proxy or {}).get("all")
        self.pool = urllib3.ProxyManager(via, **pool) if via else urllib3.PoolManager(**pool)

    @contextmanager
    def paced(self, wait: Wait | None) -> Iterator[None]:
        """This thread's next request waits on `wait` just before it is sent, and goes From the
        sender `wait` returns (None: as built)."""
        self._local.wait = wait
        try:
            yield
        finally:
            self._local.wait = None

    def last_headers(self) -> Mapping[str, Any] | None:
        return getattr(self._local, "headers", None)

    def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Twilio's `HttpClient.request`: urllib3's errors propagate (`_send_one` classifies them)."""
        if timeout is not None and timeout <= 0:
            raise ValueError(timeout)
        if self.base_url and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        if params:
            url = f"{url}?{urlencode(params, doseq=True)}"
        sent_headers = dict(headers or {})
        if auth is not None:
            sent_headers["Authorization"] = self._basic(auth)
        fields = dict(data or {})
        self._local.headers = None
        stamp = self._wait(fields)
        if stamp is not None:
            sent_headers[SLOT_HEADER] = stamp
        body: str | None = None
        if fields or method.upper() in ("POST", "PUT", "PATCH"):
            kind = sent_headers.get("Content-Type", FORM)
            body = json.dumps(fields) if kind in JSON_TYPES else urlencode(fields, doseq=True)
            sent_headers["Content-Type"] = kind
        answer = self.pool.urlopen(
            method.upper(),
            url,
            body=body,
            headers=sent_headers,
            timeout=self.timeouts if timeout is None else urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
            redirect=allow_redirects,
            preload_content=True,
        )
        self._local.headers = answer.headers
        return Response(answer.status, answer.data.decode("utf-8", errors="replace"), answer.headers)

    def _wait(self, fields: dict[str, object]) -> str | None:
        """Runs the thread's pending wait (one per message, not per retry) and puts the slot's
        sender in `From`; returns the slot stamp for the sandbox, if it gets one."""
        wait = getattr(self._local, "wait", None)
        if wait is None:
            return None
        self._local.wait = None
        note_slot(None)  # a slot noted by a throttle called elsewhere in this thread is not ours
        sender = wait()
        if sender is not None and "From" in fields:
            fields["From"] = sender
        slot = noted_slot()
        if self._stamp and slot is not None:
            return f"{slot:.6f} {time.time():.6f}"
        return None

    def _basic(self, auth: tuple[str, str]) -> str:
        """The Basic header, built once per credential pair rather than per message."""
        value = self._auth.get(auth)
        if value is None:
            value = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            self._auth[auth] = value
        return value
