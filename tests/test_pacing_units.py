"""The pacer against the real Redis: a batch takes only slots inside its window, refusals reserve
nothing, the first tier takes the next free slots before later tiers, sender pools spread requests,
handed-back batches come back in turn, one window's worth at a time, a batch on the urgent lane
keeps a slot it would have slept for, which its comeback then sends on, and a later tier's batch
reserves a few slots a call without leaving any unused."""

from __future__ import annotations

import uuid

import pytest
import redis

from channels.base import ChannelName, NoSlot, Recipient
from channels.registry import CHANNEL_CLASSES
from config import Settings
from dispatcher.engine.ratelimit import (
    AT_ONCE_HOLD_S,
    COMEBACK_LEAD_S,
    Limit,
    Pacer,
    RateLimiter,
    Slot,
    limit_for,
    pool_for,
)
from tests.conftest import PREFIX, REDIS_URL

ADMIN = Recipient(1, "+14155550100")


@pytest.fixture
def limiter() -> RateLimiter:
    return RateLimiter(redis.Redis.from_url(REDIS_URL), headroom=1.0)


def settings(**values: object) -> Settings:
    return Settings(redis_prefix=f"{PREFIX}{uuid.uuid4().hex}:", **values)  # type: ignore[arg-type]


def no_sleep(seconds: float) -> None:
    """The slots are computed on Redis's clock: the test needs only their offsets, not the wait."""


def take(pacer: Pacer, n: int) -> tuple[list[str | None], int]:
    """Asks for `n` slots; returns the senders granted and how many were refused."""
    granted, refused = [], 0
    for i in range(n):
        try:
            granted.append(pacer(Recipient(i, ADMIN.address)))
        except NoSlot:
            refused += 1
    return granted, refused


def test_a_batch_takes_only_the_slots_inside_its_window(limiter: RateLimiter) -> None:
    config = settings(rate_twilio_per_s=10)
    first = Pacer(ChannelName.SMS, limiter, config, urgent=True, sleep=no_sleep)
    granted, refused = take(first, 30)
    assert len(granted) == 10 and refused == 20  # 0.0, 0.1 … 0.9 s: one second at 10/s
    assert first.refused  # the pool is marked full: the batch asks Redis no more
    # a refusal reserved nothing: the next slot is right after the tenth
    bucket = pool_for(ChannelName.SMS, ADMIN, config).buckets[0]
    assert 0.9 <= limiter.reserve(bucket, Limit(10)) <= 1.01


def test_at_one_per_second_a_batch_sends_one_message_and_hands_back_the_rest(limiter: RateLimiter) -> None:
    pacer = Pacer(ChannelName.SMS, limiter, settings(rate_twilio_per_s=1), urgent=True, sleep=no_sleep)
    granted, refused = take(pacer, 40)
    assert (len(granted), refused) == (1, 39)


def test_later_tiers_leave_the_next_slots_to_the_first_tier(limiter: RateLimiter) -> None:
    config = settings(rate_twilio_per_s=10)
    later = Pacer(ChannelName.SMS, limiter, config, urgent=False, sleep=no_sleep)
    granted, _ = take(later, 30)
    assert len(granted) == 3  # only slots within a quarter window: 0.0, 0.1, 0.2 s
    urgent = Pacer(ChannelName.SMS, limiter, config, urgent=True, sleep=no_sleep)
    granted, _ = take(urgent, 30)
    # the admins take every slot left in their own window (0.3 s up to about 1 s; it opened later)
    assert 7 <= len(granted) <= 8
    late = Pacer(ChannelName.SMS, limiter, config, urgent=False, sleep=no_sleep)
    assert take(late, 5) == ([], 5)  # while admins hold the next second, later tiers get nothing


def test_a_sender_pool_spreads_requests_over_its_numbers(limiter: RateLimiter) -> None:
    numbers = ["+14155550001", "+14155550002", "+14155550003"]
    config = settings(rate_twilio_per_s=2, twilio_from=",".join(numbers))
    granted, refused = take(Pacer(ChannelName.SMS, limiter, config, urgent=True, sleep=no_sleep), 20)
    # two slots per number within the second (0.0 and 0.5 s), each number's own bucket
    assert sorted(granted) == sorted(numbers * 2) and refused == 14  # type: ignore[type-var]
    assert set(granted[:3]) == set(numbers)  # the earliest free slot first: one of each, then again


def test_a_messaging_service_has_its_own_bucket_and_rate(limiter: RateLimiter) -> None:
    sid = "MG" + "a" * 32
    config = settings(twilio_messaging_service_sid=sid, rate_twilio_messaging_service_per_s=5)
    pool = pool_for(ChannelName.SMS, ADMIN, config)
    assert pool.senders == (None,) and pool.buckets[0].endswith(sid) and pool.limit == Limit(5)
    granted, _ = take(Pacer(ChannelName.SMS, limiter, config, urgent=True, sleep=no_sleep), 20)
    assert granted == [None] * 5


def test_handed_back_batches_come_back_in_turn_admins_first(limiter: RateLimiter) -> None:
    config = settings(rate_twilio_per_s=10)
    turns = []
    for urgent in (False, False, True, False):
        pacer = Pacer(ChannelName.SMS, limiter, config, urgent=urgent, sleep=no_sleep)
        take(pacer, 30)
        [turn] = pacer.comebacks().values()
        turns.append(turn)
    later_a, later_b, admins, later_c = turns
    # the first later batch took 3 slots and books as much bucket time (0.3 s) just before its next
    # slot; the second (no slot: it books a whole window) queues behind it
    assert 0 < later_a < later_b and later_b - later_a == pytest.approx(0.3, abs=0.02)
    # the admins' batch took 7 or 8 slots and books its own line, unaffected by the later one;
    # a later batch that books after it queues behind both lines
    assert later_c >= admins + 0.6 and later_c >= later_b + 0.9


def test_a_stalled_thread_gives_its_slot_up_and_reserves_again(limiter: RateLimiter) -> None:
    import time

    config = settings(rate_twilio_per_s=20)
    slept: list[float] = []

    def stall_once(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds + (0.2 if len(slept) == 1 else 0))  # the first wake is 0.2 s late

    pacer = Pacer(ChannelName.SMS, limiter, config, urgent=True, sleep=stall_once)
    bucket = pool_for(ChannelName.SMS, ADMIN, config).buckets[0]
    limiter.reserve(bucket, Limit(20))  # someone holds the slot now: ours is 50 ms out
    assert pacer(ADMIN) is None
    assert len(slept) == 1
    # it woke 0.2 s past its slot, so it took a fresh one (now): the bucket is booked 50 ms ahead
    # again, where without the re-reserve it would be free
    assert 0.02 <= limiter.reserve(bucket, Limit(20)) <= 0.051


def test_on_the_lane_a_batch_keeps_the_slot_it_would_sleep_for_and_hands_the_rest_back(
    limiter: RateLimiter,
) -> None:
    config = settings(rate_twilio_per_s=10)
    slept: list[float] = []
    pacer = Pacer(ChannelName.SMS, limiter, config, urgent=True, sleep=slept.append, hold=AT_ONCE_HOLD_S)
    granted, refused = take(pacer, 30)
    # slots at 0.0 and 0.1 s are within the hold; the one at 0.2 s is kept, the rest refused
    assert len(granted) == 2 and refused == 28
    assert all(s <= AT_ONCE_HOLD_S for s in slept)  # no sleep longer than the hold
    [(kept_id, ((index, _at), countdown))] = pacer.kept_slots().items()
    assert kept_id == 2 and index == 0
    # it comes back just before its slot: 0.2 s out, less the comeback's lead
    assert 0.2 - COMEBACK_LEAD_S - 0.05 <= countdown <= 0.2 - COMEBACK_LEAD_S + 0.01
    # the kept slot is booked in Redis: the next free one is after it
    bucket = pool_for(ChannelName.SMS, ADMIN, config).buckets[0]
    assert 0.25 <= limiter.reserve(bucket, Limit(10)) <= 0.31
    # the 27 refused rows book a turn; the kept one does not need one
    [turn] = pacer.comebacks().values()
    assert turn > 0


def test_a_comeback_sends_on_its_kept_slot_and_a_late_one_takes_a_fresh_slot(limiter: RateLimiter) -> None:
    config = settings(rate_twilio_per_s=10)
    bucket = pool_for(ChannelName.SMS, ADMIN, config).buckets[0]
    first = Pacer(ChannelName.SMS, limiter, config, urgent=True, sleep=no_sleep, hold=0.0)
    limiter.reserve(bucket, Limit(10))  # someone holds now: the batch's first slot is 0.1 s out
    with pytest.raises(NoSlot):
        first(Recipient(7, ADMIN.address))
    [((index, at), _)] = first.kept_slots().values()
    slept: list[float] = []
    comeback = Pacer(
        ChannelName.SMS, limiter, config, urgent=True, sleep=slept.append, kept={7: (int(index), at)}
    )
    assert comeback(Recipient(7, ADMIN.address)) is None  # sent, on the kept slot
    assert comeback.granted and len(slept) <= 1
    # no new slot was claimed: the next free one is still right after the kept one (0.2 s out)
    assert 0.15 <= limiter.reserve(bucket, Limit(10)) <= 0.21
    # a comeback that wakes long after its slot has lost it and claims like any request
    late = Pacer(ChannelName.SMS, limiter, config, urgent=True, sleep=no_sleep, kept={8: (0, at - 5.0)})
    assert late(Recipient(8, ADMIN.address)) is None
    assert 0.35 <= limiter.reserve(bucket, Limit(10)) <= 0.41  # it took the slot after ours


def test_each_adapter_declares_its_providers_rate_and_the_limiter_uses_it() -> None:
    """The limits are the providers' facts (their adapters say them); the engine only pools them."""
    config = settings(
        rate_sendgrid_per_s=12,
        rate_twilio_per_s=2,
        rate_slack_per_channel_per_s=3,
        rate_x_per_window=90,
        rate_x_window_s=900,
        rate_webhook_per_s=40,
    )
    assert {n: limit_for(n, config) for n in CHANNEL_CLASSES} == {
        ChannelName.EMAIL: Limit(12),
        ChannelName.SMS: Limit(2),
        ChannelName.CHAT: Limit(3),
        ChannelName.SOCIAL: Limit(0.1),
        ChannelName.WEBHOOK: Limit(40),
    }
    assert all(limit_for(n, config) == Limit(c.rate_per_s(config)) for n, c in CHANNEL_CLASSES.items())


class CountingLimiter(RateLimiter):
    """The real limiter; counts its round trips to Redis."""

    calls = 0

    def claim_many(self, *args: object, **kwargs: object) -> list[Slot]:
        self.calls += 1
        return super().claim_many(*args, **kwargs)  # type: ignore[arg-type]


def test_a_later_batch_reserves_its_slots_a_few_at_a_time_and_wastes_none() -> None:
    limiter = CountingLimiter(redis.Redis.from_url(REDIS_URL), headroom=1.0)
    config = settings(rate_twilio_per_s=100)
    pacer = Pacer(ChannelName.SMS, limiter, config, urgent=False, sleep=no_sleep, requests=10)
    granted, refused = take(pacer, 10)
    assert (len(granted), refused) == (10, 0)
    assert limiter.calls == 3  # 4 + 4 + 2 slots, never more than the requests still to come
    assert sum(pacer.granted.values()) == 10 and not any(pacer._spares.values())
    # the ten took the first ten slots, 10 ms apart, and none is left reserved: the next is the 11th
    bucket = pool_for(ChannelName.SMS, ADMIN, config).buckets[0]
    assert 0.09 <= limiter.reserve(bucket, Limit(100)) <= 0.101


def test_the_first_tier_reserves_one_slot_a_call() -> None:
    limiter = CountingLimiter(redis.Redis.from_url(REDIS_URL), headroom=1.0)
    urgent = Pacer(
        ChannelName.SMS, limiter, settings(rate_twilio_per_s=10), urgent=True, sleep=no_sleep, requests=3
    )
    assert len(take(urgent, 3)[0]) == 3 and limiter.calls == 3  # its overdraft goes one request at a time


def test_a_group_stops_at_the_window_and_a_refusal_reserves_nothing() -> None:
    limiter = CountingLimiter(redis.Redis.from_url(REDIS_URL), headroom=1.0)
    config = settings(rate_twilio_per_s=10)
    later = Pacer(ChannelName.SMS, limiter, config, urgent=False, sleep=no_sleep, requests=30)
    granted, refused = take(later, 30)
    # a quarter window holds 0.0, 0.1 and 0.2 s: the first call reserved those three of the four it
    # asked for, the second was refused, and the batch asked no more
    assert (len(granted), refused, limiter.calls) == (3, 27, 2)
    bucket = pool_for(ChannelName.SMS, ADMIN, config).buckets[0]
    assert 0.25 <= limiter.reserve(bucket, Limit(10)) <= 0.31  # the next free slot is the fourth
