"""Start-up checks name the setting at fault, against a real sandbox and real template files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from config import Settings
from dispatcher.errors import ConfigurationError, TemplateError
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
