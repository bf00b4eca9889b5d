"""Settings name channels, event kinds and impacts as Literal strings (config imports nothing of ours);
these tests keep those vocabularies equal to the service's enums and check bad values are refused. Pure."""

from __future__ import annotations

import subprocess
import sys
from enum import StrEnum
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from channels.base import ChannelName
from config.settings import ChannelKey, EventKey, ImpactKey, Settings
from dispatcher.domain.message import EventKind, Impact


@pytest.mark.parametrize(
    ("literal", "enum"),
    [(ChannelKey, ChannelName), (EventKey, EventKind), (ImpactKey, Impact)],
    ids=["channel", "event", "impact"],
)
def test_literal_matches_enum(literal: Any, enum: type[StrEnum]) -> None:
    values = get_args(literal)
    assert len(values) == len(set(values)), "a Literal lists a value twice"
    assert set(values) == {member.value for member in enum}


def test_defaults_unchanged() -> None:
    settings = Settings()
    assert settings.channels_enabled == [c.value for c in ChannelName]
    assert settings.channel_policy == {}
    assert settings.update_cadence_s == {impact.value: 1800.0 for impact in Impact}
    assert list(settings.update_cadence_s) == [impact.value for impact in Impact]


def test_string_keys_look_up_like_enums() -> None:
    """Users index with enum members; StrEnum hashing as its value keeps that working."""
    settings = Settings(update_cadence_s={"critical": 600.0}, channel_policy={"sms": ["incident_opened"]})
    assert settings.update_cadence_s[Impact.CRITICAL] == 600.0
    assert EventKind.INCIDENT_OPENED in settings.channel_policy[ChannelName.SMS]
    assert ChannelName.SMS in Settings().channels_enabled


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channels_enabled", ["fax"]),
        ("channel_policy", {"fax": []}),
        ("channel_policy", {"sms": ["incident_exploded"]}),
        ("update_cadence_s", {"apocalyptic": 60.0}),
    ],
    ids=["channel", "policy-channel", "policy-event", "impact"],
)
def test_bad_value_is_refused_naming_its_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(**{field: value})
    assert {str(error["loc"][0]) for error in raised.value.errors()} == {field}
    assert field in str(raised.value)


def test_bad_channel_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_CHANNELS_ENABLED", '["fax"]')
    with pytest.raises(ValidationError, match="channels_enabled"):
        Settings()


def test_config_imports_nothing_of_ours() -> None:
    """In a fresh interpreter: importing config loads none of the service's packages."""
    code = (
        "import sys, config\n"
        "ours = {'channels', 'dispatcher', 'templates'}\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ours)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
