"""The usual way, written here as the baseline the dispatcher is compared against (benchmarks only).

A separate Celery app with its own queue (`naive`) and key prefix: one task per recipient and channel,
a fresh SDK client per send, no batching (one SendGrid call per email), no tiers (tasks are queued in
subscriber order, which happens to put admins first), no rate limiting, and Celery's own retry on
error. The same real SDKs talk to the same provider sandbox.

Configured from the environment: NAIVE_REDIS_URL, NAIVE_PREFIX, NAIVE_SANDBOX_URL, and the sandbox's
per-run secret (its Twilio auth token and SendGrid key) in DISPATCHER_SANDBOX_SECRET. A worker:
    celery -A benchmarks.naive worker -Q naive -P threads -c 16
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery

QUEUE = "naive"
SUBJECT = "[Major] Checkout API errors"
TEXT = "Checkout API errors: card payments fail for some customers. Status: https://status.example.com"


def make_app() -> Celery:
    url = os.environ.get("NAIVE_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = os.environ.get("NAIVE_PREFIX", "naive:")
    app = Celery("naive", broker=url)
    app.conf.update(
        broker_transport_options={"global_keyprefix": prefix, "visibility_timeout": 3600},
        task_default_queue=QUEUE,
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


app = make_app()
SANDBOX = os.environ.get("NAIVE_SANDBOX_URL", "http://127.0.0.1:8001")
SECRET = os.environ.get("DISPATCHER_SANDBOX_SECRET", "")


def _send(channel: str, address: str) -> None:
    if channel == "email":
        from sendgrid import SendGridAPIClient
        from sendgrid.helpers.mail import Mail

        client = SendGridAPIClient(api_key=SECRET, host=SANDBOX)
        mail = Mail("status@example.com", address, SUBJECT, plain_text_content=TEXT)
        client.send(mail)
    elif channel == "sms":
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        class Routed(TwilioHttpClient):
            def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
                url = url.replace("https://api.twilio.com", SANDBOX)
                return super().request(method, url, *args, **kwargs)

        client = Client("AC" + "0" * 32, SECRET, http_client=Routed(timeout=10))
        client.messages.create(to=address, from_="+15005550006", body=TEXT)
    elif channel == "chat":
        from slack_sdk import WebClient

        WebClient(token="xoxb-sandbox", base_url=SANDBOX + "/api/").chat_postMessage(
            channel=address, text=TEXT
        )
    elif channel == "social":
        import tweepy
        from requests.adapters import HTTPAdapter

        class Routed(HTTPAdapter):
            def send(self, request: Any, **kwargs: Any) -> Any:
                request.url = request.url.replace("https://api.twitter.com", SANDBOX)
                return super().send(request, **kwargs)

        client = tweepy.Client(
            consumer_key="sandbox",
            consumer_secret="sandbox",
            access_token="sandbox",
            access_token_secret="sandbox",
        )
        client.session.mount("https://api.twitter.com", Routed())
        client.create_tweet(text=f"{TEXT} #{time.time_ns()}", user_auth=True)


@app.task(name="naive.send", bind=True, max_retries=5, default_retry_delay=1)
def send(self: Any, channel: str, address: str) -> None:
    try:
        _send(channel, address)
    except Exception as exc:
        raise self.retry(exc=exc) from exc


def plan(subscribers: Sequence[Any]) -> list[tuple[str, str]]:
    """One (channel, address) per recipient and channel, in subscriber order; a chat channel shared by
    an organisation is posted to once (so both dispatchers deliver the same messages)."""
    tasks: list[tuple[str, str]] = []
    seen_chat: set[str] = set()
    for sub in subscribers:
        if sub.email:
            tasks.append(("email", str(sub.email)))
        if sub.phone:
            tasks.append(("sms", str(sub.phone)))
        if sub.slack_channel and sub.slack_channel not in seen_chat:
            seen_chat.add(sub.slack_channel)
            tasks.append(("chat", str(sub.slack_channel)))
    tasks.append(("social", "public"))
    return tasks


def broadcast(tasks: Sequence[tuple[str, str]]) -> None:
    """What a naive request handler does: queue every send, one task each."""
    with app.producer_or_acquire() as producer:
        for channel, address in tasks:
            send.apply_async((channel, address), queue=QUEUE, producer=producer)
