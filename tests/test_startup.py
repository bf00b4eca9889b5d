"""Start-up checks name the setting at fault, against a real sandbox and real template files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from channels.rendering import TemplateError
from config import Settings
from dispatcher.domain.errors import ConfigurationError
from dispatcher.startup import check
from tests.conftest import free_port


def test_partial_credentials_name_what_is_missing(sandbox) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(sandbox_url=sandbox.url, twilio_account_sid=SecretStr("AC123"))
    with pytest.raises(ConfigurationError) as caught:
        check(settings)
    assert caught.value.fields == ["DISPATCHER_TWILIO_AUTH_TOKEN"]


def test_a_sandboxed_channel_needs_a_sandbox_that_answers() -> None:
    settings = Settings(sandbox_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConfigurationError, match="DISPATCHER_SANDBOX_URL") as caught:
        check(settings)
    assert "email" in caught.value.message and "sms" in caught.value.message


def test_the_report_says_which_channels_are_sandboxed(sandbox) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        sandbox_url=sandbox.url,
        sendgrid_api_key=SecretStr("SG.key"),
        sendgrid_webhook_public_key=SecretStr(sandbox.public_key),
    )
    lines = check(settings)
    assert "email: live (sendgrid)" in lines
    assert f"sms: sandbox ({sandbox.url})" in lines


def test_a_broken_override_template_is_named_at_start(tmp_path: Path, sandbox) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "incident_opened.txt.j2").write_text("{{ message.title | nosuchfilter }}")
    settings = Settings(sandbox_url=sandbox.url, templates_override_dir=tmp_path)
    with pytest.raises(TemplateError, match="incident_opened"):
        check(settings)


def test_live_sendgrid_without_its_webhook_key_refuses_to_start(sandbox) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(sandbox_url=sandbox.url, sendgrid_api_key=SecretStr("SG.key"))
    with pytest.raises(ConfigurationError) as caught:
        check(settings)
    assert caught.value.fields == ["DISPATCHER_SENDGRID_WEBHOOK_PUBLIC_KEY"]

    env = {**os.environ, "DISPATCHER_SANDBOX_URL": sandbox.url, "DISPATCHER_SENDGRID_API_KEY": "SG.key"}
    env.pop("DISPATCHER_SENDGRID_WEBHOOK_PUBLIC_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "web", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "DISPATCHER_SENDGRID_WEBHOOK_PUBLIC_KEY" in proc.stderr and "SG.key" not in proc.stderr


def test_live_twilio_must_be_coherent(sandbox) -> None:  # type: ignore[no-untyped-def]
    token = SecretStr("a-real-looking-token")
    for sid, field in (
        ("AC123", "DISPATCHER_TWILIO_ACCOUNT_SID"),
        ("AC" + "0f" * 16, "DISPATCHER_TWILIO_AUTH_TOKEN"),
    ):
        settings = Settings(
            sandbox_url=sandbox.url,
            twilio_account_sid=SecretStr(sid),
            twilio_auth_token=token if field != "DISPATCHER_TWILIO_AUTH_TOKEN" else SecretStr(" "),
        )
        with pytest.raises(ConfigurationError) as caught:
            check(settings)
        assert caught.value.fields == [field]


def test_a_sandboxed_provider_needs_the_sandboxs_secret(sandbox) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(sandbox_url=sandbox.url, sandbox_secret=None)
    with pytest.raises(ConfigurationError) as caught:
        check(settings)
    assert caught.value.fields == ["DISPATCHER_SANDBOX_SECRET"]
    assert check(Settings(sandbox_url=sandbox.url, channels_enabled=["chat"], sandbox_secret=None))
