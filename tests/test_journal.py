"""Kept provider answers round-trip through the real Redis exactly, and are gone once forgotten."""

from __future__ import annotations

import redis

from channels.base import ChannelName, Failure, Outcome
from config import get_settings
from dispatcher.engine import journal


def test_kept_answers_come_back_as_given_and_go_when_forgotten() -> None:
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url or "")
    client.delete(journal.answers_key(settings))
    answers = [
        Outcome.ok(101, "SM0123"),
        Outcome.failed(102, Failure.RATE_LIMITED, code="20429", error="too many", retry_after=2.0),
        Outcome.failed(103, Failure.RETRYABLE, code="timeout", error="read timed out"),
    ]
    try:
        assert journal.keep(client, settings, 7, ChannelName.SMS, "claim-a", answers)
        kept = {k.outcome.delivery_id: k for k in journal.kept(client, settings)}
        assert {i: k.outcome for i, k in kept.items()} == {o.delivery_id: o for o in answers}
        assert {(k.broadcast_id, k.channel, k.claim) for k in kept.values()} == {
            (7, ChannelName.SMS, "claim-a")
        }
        assert journal.kept_for(client, settings, [101, 104]) == {101}
        journal.forget(client, settings, [101, 102])
        assert [k.outcome.delivery_id for k in journal.kept(client, settings)] == [103]
    finally:
        client.delete(journal.answers_key(settings))
        client.close()


def test_keeping_with_redis_down_says_so_instead_of_raising() -> None:
    settings = get_settings()
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    assert not journal.keep(down, settings, 7, ChannelName.SMS, "c", [Outcome.ok(1, "x")])


def test_a_kept_answer_keeps_the_providers_suppression_reason() -> None:
    """A refusal recorded by the sweeper must still end `suppressed` and reach the suppression list."""
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url or "")
    client.delete(journal.answers_key(settings))
    refused = Outcome.failed(201, Failure.PERMANENT, code="21610", error="opted out", suppression="opted_out")
    try:
        assert journal.keep(client, settings, 7, ChannelName.SMS, "claim-b", [refused])
        [kept] = journal.kept(client, settings)
        assert kept.outcome == refused and kept.outcome.recipient_refused
    finally:
        client.delete(journal.answers_key(settings))
        client.close()


def test_a_never_sent_note_does_not_replace_an_answer_already_kept() -> None:
    """A worker that gave up on its claim says "never sent" for every row it asked for; a row that
    another claim sent meanwhile keeps that claim's answer."""
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url or "")
    client.delete(journal.answers_key(settings))
    try:
        assert journal.keep(client, settings, 7, ChannelName.SMS, "later", [Outcome.ok(301, "SM1")])
        unsent = [Outcome.no_slot(301), Outcome.no_slot(302)]
        assert journal.keep(client, settings, 7, ChannelName.SMS, "gave-up", unsent, only_new=True)
        kept = {k.outcome.delivery_id: (k.claim, k.outcome) for k in journal.kept(client, settings)}
        assert kept == {301: ("later", Outcome.ok(301, "SM1")), 302: ("gave-up", Outcome.no_slot(302))}
    finally:
        client.delete(journal.answers_key(settings))
        client.close()
