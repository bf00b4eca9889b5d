"""Settings pointing every provider at the session's sandbox (fixture `sandbox`: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from channels.sandbox import SandboxServer
from config.settings import Settings


@pytest.fixture
def make_settings(sandbox: SandboxServer) -> Callable[..., Settings]:
    """Settings pointing every provider at the sandbox (no credentials), status webhooks at its
    receiver, with small timeouts."""

    def _make(**overrides: Any) -> Settings:
        assert sandbox.url is not None
        values: dict[str, Any] = {
            "sandbox_url": sandbox.url,
            "public_url": f"{sandbox.url}/hooks/service",
            "unsubscribe_url": "https://status.example.com/unsubscribe",
            "provider_timeout_s": 5.0,
            "send_concurrency": 8,
            "sendgrid_api_key": None,
            "sendgrid_host": None,
            "twilio_account_sid": None,
            "twilio_auth_token": None,
            "twilio_base_url": None,
            "slack_bot_token": None,
            "slack_base_url": None,
            "x_consumer_key": None,
            "x_consumer_secret": None,
            "x_access_token": None,
            "x_access_token_secret": None,
            "x_base_url": None,
            **overrides,
        }
        return Settings(**values)

    return _make
