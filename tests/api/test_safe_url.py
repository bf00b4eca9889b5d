"""Outgoing webhook URLs: refused on save (422 naming the field) and before each send, after DNS
resolution, with nothing sent; a receiver's answer body is never stored."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from channels.sandbox import SandboxServer
from channels.webhook.adapter import WebhookChannel, checked_transport
from channels.webhook.safe_url import UnsafeUrl, check, refused_address, refused_connection
from config import Settings
from dispatcher.app import create_app
from dispatcher.store.db import Database
from dispatcher.store.models import Subscriber
from tests.api.conftest import auth, count
from tests.channels.helpers import recipients, webhook_variant

STRICT = {"webhook_allow_http": False, "webhook_allowed_hosts": []}
PROBES = [
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/hook",
    "https://localhost/hook",
    "https://2130706433/hook",
    "https://0.0.0.0/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[fd00:ec2::254]/hook",
    "https://100.64.0.1/hook",
]


@pytest.mark.parametrize("url", PROBES)
def test_private_loopback_and_metadata_addresses_are_refused_after_resolution(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="refused"):
        check(url, Settings(**STRICT))


def test_the_scheme_must_be_https_unless_http_is_allowed_and_named_hosts_pass() -> None:
    with pytest.raises(UnsafeUrl, match="scheme must be https"):
        check("http://93.184.216.34/hook", Settings(**STRICT))
    check("http://93.184.216.34/hook", Settings(webhook_allow_http=True, webhook_allowed_hosts=[]))
    check("https://93.184.216.34/hook", Settings(**STRICT))  # a public address literal
    with pytest.raises(UnsafeUrl, match="user name"):
        check("https://me:pw@93.184.216.34/hook", Settings(**STRICT))
    check(
        "http://127.0.0.1:8001/hooks/a",
        Settings(webhook_allow_http=True, webhook_allowed_hosts=["127.0.0.1"]),
    )
    assert refused_address("8.8.8.8") is None


@pytest.mark.parametrize("url", PROBES[:4])
def test_saving_a_subscriber_with_an_unsafe_webhook_is_a_422_naming_the_field(
    url: str, settings: Settings, keys: dict[str, str], db: Database
) -> None:
    strict = settings.model_copy(update=STRICT)
    with TestClient(create_app(strict)) as client:
        put = client.put("/v1/subscribers/hook", json={"webhook_url": url}, headers=auth(keys["admin"]))
        assert put.status_code == 422, put.text
        assert (
            put.json()["error"]["fields"] == ["webhook_url"] and "refused" in put.json()["error"]["message"]
        )
        imported = client.post(
            "/v1/subscribers/import",
            json={"subscribers": [{"external_id": "hook", "webhook_url": url}]},
            headers=auth(keys["admin"]),
        )
        assert imported.json()["errors"][0]["field"] == "webhook_url"
    assert count(db, Subscriber) == 0


def test_nothing_is_sent_to_a_refused_url_and_no_answer_body_is_kept(sandbox: SandboxServer) -> None:
    def make_settings(**overrides: Any) -> Settings:
        return Settings(sandbox_url=sandbox.url, provider_timeout_s=5.0, **overrides)

    hook = recipients([f"{sandbox.url}/hooks/a"])
    refused = WebhookChannel(make_settings(webhook_allow_http=True, webhook_allowed_hosts=[]))
    [outcome] = refused.send(webhook_variant(), hook)
    assert outcome.code == "unsafe_url" and "loopback" in (outcome.error or "")
    assert sandbox.messages("webhook") == []
    sandbox.set_faults("webhook", error_rate=1.0, error_status=502)
    [failed] = WebhookChannel(make_settings()).send(webhook_variant(), hook)
    assert failed.code == "502" and failed.error == "HTTP 502 Bad Gateway"


def test_a_host_rebound_to_loopback_after_its_check_is_refused_when_connecting(
    sandbox: SandboxServer,
) -> None:
    """DNS rebinding: the check before the send saw a public address, the connection would get the
    sandbox's loopback one. The webhook transport checks what it connects to, so nothing arrives."""
    settings = Settings(webhook_allow_http=True, webhook_allowed_hosts=[])
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # the check's answer, then the connection's

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    url = f"http://hooks.example.com:{urlsplit(sandbox.url).port}/hooks/a"
    check(url, settings, rebinding)  # a public address: the check before the send passes
    client = httpx.Client(transport=checked_transport(settings, httpx.Limits(), rebinding))
    with client, pytest.raises(httpx.ConnectError) as caught:
        client.post(url, content=b"{}")
    assert "loopback" in (refused_connection(caught.value) or "")
    assert sandbox.messages("webhook") == []
