"""ChatChannel through the real Slack SDK against the sandbox."""

from __future__ import annotations

from collections.abc import Callable

from channels.base import Failure
from channels.chat.adapter import ChatChannel
from channels.sandbox import SandboxServer
from config.settings import Settings

from .helpers import chat_variant, recipients


def test_one_post_per_destination_with_blocks(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    channel = ChatChannel(make_settings())
    variant = chat_variant()
    outcomes = channel.send(variant, recipients(["C1", "C2", "C3"]))
    assert [o.delivery_id for o in outcomes] == [1, 2, 3] and all(o.accepted for o in outcomes)
    records = {r["recipient"]: r for r in sandbox.messages("chat")}
    assert set(records) == {"C1", "C2", "C3"}
    for outcome, name in zip(outcomes, ["C1", "C2", "C3"], strict=True):
        assert records[name]["text"] == variant.text
        assert records[name]["blocks"] == variant.blocks
        assert records[name]["provider_message_id"] == outcome.provider_message_id


def test_channel_errors_are_permanent_with_slacks_code(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    sandbox.set_faults("slack", bad_channels=["CGONE"], channel_errors={"CPRIV": "not_in_channel"})
    outcomes = ChatChannel(make_settings()).send(chat_variant(), recipients(["CGONE", "CPRIV", "COK"]))
    assert [(o.failure, o.code) for o in outcomes] == [
        (Failure.PERMANENT, "channel_not_found"),
        (Failure.PERMANENT, "not_in_channel"),
        (None, None),
    ]


def test_per_channel_rate_limit_is_rate_limited_with_retry_after(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    sandbox.set_faults("slack", rate_limit_per_s=1)
    outcomes = ChatChannel(make_settings()).send(chat_variant(), recipients(["C1", "C1", "C2"]))
    same_channel = sorted(outcomes[:2], key=lambda o: o.accepted)
    assert same_channel[1].accepted
    limited = same_channel[0]
    assert (limited.failure, limited.code) == (Failure.RATE_LIMITED, "ratelimited")
    assert limited.retry_after is not None and limited.retry_after >= 1
    assert outcomes[2].accepted


def test_server_errors_and_timeouts_are_retryable(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    channel = ChatChannel(make_settings(provider_timeout_s=0.5))
    sandbox.set_faults("slack", error_rate=1.0, error_status=503)
    [outcome] = channel.send(chat_variant(), recipients(["C1"]))
    assert outcome.failure is Failure.RETRYABLE
    sandbox.set_faults("slack", rate_429=1.0, retry_after_s=4)
    [outcome] = channel.send(chat_variant(), recipients(["C1"]))
    assert (outcome.failure, outcome.retry_after) == (Failure.RATE_LIMITED, 4.0)
    sandbox.set_faults("slack", timeout_rate=1.0, hang_s=2)
    [outcome] = channel.send(chat_variant(), recipients(["C1"]))
    assert (outcome.failure, outcome.code) == (Failure.RETRYABLE, "timeout")
    assert sandbox.messages("chat") == []
