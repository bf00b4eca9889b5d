"""SocialChannel through the real tweepy client against the sandbox."""

from __future__ import annotations

from collections.abc import Callable

from channels.base import Failure, Recipient
from channels.sandbox import SandboxServer
from channels.social.adapter import SocialChannel
from config.settings import Settings

from .helpers import social_variant

PUBLIC = [Recipient(1, "public")]


def test_one_post_and_duplicates_are_permanent(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    channel = SocialChannel(make_settings())
    throttled: list[Recipient] = []
    [outcome] = channel.send(social_variant("Investigating: API down"), PUBLIC, throttle=throttled.append)
    assert outcome.accepted and outcome.provider_message_id
    assert throttled == PUBLIC
    [record] = sandbox.messages("social")
    assert (record["text"], record["provider_message_id"]) == (
        "Investigating: API down",
        outcome.provider_message_id,
    )

    [again] = channel.send(social_variant("Investigating: API down"), [Recipient(2, "public")])
    assert (again.delivery_id, again.failure, again.code) == (2, Failure.PERMANENT, "403")
    assert "duplicate" in (again.error or "")

    [too_long] = channel.send(social_variant("x" * 281), PUBLIC)
    assert (too_long.failure, too_long.code) == (Failure.PERMANENT, "400")


def test_faults_are_classified(sandbox: SandboxServer, make_settings: Callable[..., Settings]) -> None:
    channel = SocialChannel(make_settings(provider_timeout_s=0.5))
    sandbox.set_faults("x", rate_429=1.0, retry_after_s=5)
    [outcome] = channel.send(social_variant("post 1"), PUBLIC)
    assert (outcome.failure, outcome.retry_after) == (Failure.RATE_LIMITED, 5.0)
    sandbox.set_faults("x", error_rate=1.0, error_status=503)
    [outcome] = channel.send(social_variant("post 2"), PUBLIC)
    assert (outcome.failure, outcome.code) == (Failure.RETRYABLE, "503")
    sandbox.set_faults("x", timeout_rate=1.0, hang_s=2)
    [outcome] = channel.send(social_variant("post 3"), PUBLIC)
    assert (outcome.failure, outcome.code) == (Failure.RETRYABLE, "timeout")
    assert sandbox.messages("social") == []
