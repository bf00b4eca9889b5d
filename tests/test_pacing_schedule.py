"""The schedule the pacer hands out (issue 17): what providers count is arrivals in any 1-second
window, so the slots two concurrent batches get must never put more than the limit in one; each
slot has a local due time taken from Redis's clock, not from when its answer was read. The pure
parts (the window count, the clock mapping) are tested without servers; the schedule on the real
Redis, with threads that do not sleep (the slots are on Redis's clock; only their times matter)."""

from __future__ import annotations

import itertools
import threading
import uuid

import pytest
import redis

from channels.base import ChannelName, NoSlot, Recipient, noted_slot
from config import Settings
from dispatcher.engine.ratelimit import (
    ClockSync,
    Limit,
    Pacer,
    RateLimiter,
    busiest_window,
    comeback_wants,
    pool_for,
)
from tests.conftest import PREFIX, REDIS_URL

PHONE = "+14155550100"


def settings(**values: object) -> Settings:
    return Settings(redis_prefix=f"{PREFIX}{uuid.uuid4().hex}:", **values)  # type: ignore[arg-type]


def no_sleep(seconds: float) -> None:
    """Slots are computed on Redis's clock: the schedule is in their times, not in waiting for them."""


# ---- pure: the window a provider counts, and Redis's clock on ours -------------------------------


def test_the_busiest_window_counts_as_a_provider_does() -> None:
    assert busiest_window([]) == 0
    assert busiest_window([0.0, 0.5, 0.99]) == 3
    # (t - 1, t]: an arrival exactly one second earlier has left the window
    assert busiest_window([0.0, 1.0, 2.0]) == 1
    assert busiest_window([0.0, 0.999, 1.0]) == 2
    assert busiest_window([i / 64 for i in range(200)]) == 64  # evenly at 64/s (exact in binary): 64
    assert busiest_window([0.3, 0.1, 0.2]) == 3  # order does not matter


def test_the_clock_offset_comes_from_the_quickest_answer() -> None:
    clock = ClockSync()
    # Redis's clock is 1000 s ahead of ours. A call answered at once pins the offset; a call whose
    # answer was read 40 ms late (other threads held the GIL) must not move it.
    clock.observe(sent=10.000, received=10.001, remote=1010.0005)
    clock.observe(sent=20.000, received=20.040, remote=1020.0005)
    assert clock.local(1030.0) == pytest.approx(30.0, abs=0.001)


def test_a_slot_is_never_due_before_it_is() -> None:
    """Whenever within its round trip Redis ran, the mapped time is at or after the true one."""
    for executed in (10.0, 10.001, 10.002):  # Redis ran at the start, middle or end of the call
        clock = ClockSync()
        clock.observe(sent=10.0, received=10.002, remote=990.0 + executed)  # Redis 990 s ahead
        assert 10.5 <= clock.local(1000.5) <= 10.5 + 0.002


def test_the_clock_follows_a_step_once_the_old_samples_age_out() -> None:
    clock = ClockSync(keep=4)
    clock.observe(0.0, 0.0001, 100.0)  # offset 100, a very short round trip
    for i in range(4):  # Redis's clock stepped 5 s; four ordinary calls
        clock.observe(1.0 + i, 1.002 + i, 106.001 + i)
    assert clock.local(110.0) == pytest.approx(5.0, abs=0.002)


def test_a_late_read_answer_does_not_make_its_slot_later() -> None:
    """The bunching of issue 17: due = (when the answer was read) + delay sends as late as the read."""
    clock = ClockSync()
    clock.observe(0.0, 0.001, 500.0005)  # one prompt call: offset 500
    # a reservation sent at 1.0, Redis answered at 501.001 with a slot 50 ms later, read at 1.061
    clock.observe(1.0, 1.061, 501.001)
    assert clock.local(501.051) == pytest.approx(1.051, abs=0.001)  # not 1.061 + 0.05


# ---- the real Redis: the schedule of concurrent batches ------------------------------------------


@pytest.mark.parametrize("headroom", [1.0, 0.9])
def test_two_concurrent_batches_never_put_more_than_the_limit_in_a_second(headroom: float) -> None:
    """Two worker processes (each its own limiter and Redis connection), 8 send threads each, every
    thread taking slots until its batch's window is full: all the slots together, counted in any
    1-second window, stay within the paced limit, and no slot is handed out twice."""
    config = settings(rate_twilio_per_s=100)
    slots: list[float] = []
    lock = threading.Lock()

    def batch() -> None:
        limiter = RateLimiter(redis.Redis.from_url(REDIS_URL), headroom=headroom)
        pacer = Pacer(ChannelName.SMS, limiter, config, urgent=True, sleep=no_sleep)

        def thread(n: int) -> None:
            for i in range(100):
                try:
                    pacer(Recipient(n * 1000 + i, PHONE))
                except NoSlot:
                    return
                at = noted_slot()
                assert at is not None
                with lock:
                    slots.append(at)

        threads = [threading.Thread(target=thread, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    batches = [threading.Thread(target=batch) for _ in range(2)]
    for b in batches:
        b.start()
    for b in batches:
        b.join()
    paced = round(100 * headroom)
    extra = RateLimiter(redis.Redis.from_url(REDIS_URL), headroom=headroom).overdraft(Limit(100))
    assert extra == (0 if headroom == 1.0 else 2)
    assert len(set(slots)) == len(slots)
    # the two batches filled their windows between them (the second opened a little later), and no
    # second held more than the paced limit and the urgent overdraft, under the provider's 100: at
    # 0.9, slots rounded down to the microsecond (11.111 ms) put 91 in a second; the interval is now
    # rounded up
    assert len(slots) >= paced // 2
    assert busiest_window(slots) <= paced + extra <= 100
    # evenly spaced: consecutive slots one paced interval apart (Redis keeps them to the
    # microsecond), but for the few overdraft slots taken ahead of the queue (none at 1.0)
    ordered = sorted(slots)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    ahead = [g for g in gaps if g < 1 / paced - 1e-5]
    assert len(ahead) <= extra * 2  # the run spans under two seconds
    assert min(g for g in gaps if g not in ahead) == pytest.approx(1 / paced, abs=1e-5)


def test_each_slot_comes_with_its_due_time_on_our_clock() -> None:
    """A slot's due time is its Redis time mapped through the limiter's clock (which every claim
    feeds), not the moment its answer was read plus the delay; the slots are the rate apart."""
    limiter = RateLimiter(redis.Redis.from_url(REDIS_URL), headroom=1.0)
    bucket = pool_for(ChannelName.SMS, Recipient(1, PHONE), settings()).buckets[0]
    slots = [limiter.claim([bucket], Limit(100), 1.0) for _ in range(20)]
    assert all(s.index == 0 for s in slots)
    assert all(b.at - a.at == pytest.approx(0.01, abs=1e-5) for a, b in itertools.pairwise(slots))
    assert slots[-1].due == pytest.approx(limiter.clock.local(slots[-1].at), abs=1e-9)


def test_a_handed_back_batch_books_the_bucket_time_it_used() -> None:
    """Sharing the bucket with another worker, a batch used half a window's slots: it books that
    much, so the line admits batches as fast as the workers use slots (a whole window each ran the
    line at half the rate, and both workers idled)."""
    spacing = 0.01
    assert comeback_wants(spacing, requests=200, granted=50, window=1.0) == pytest.approx(0.5)
    assert comeback_wants(spacing, requests=20, granted=50, window=1.0) == pytest.approx(
        0.2
    )  # all it has left
    assert comeback_wants(spacing, requests=500, granted=300, window=1.0) == 1.0  # never past a window
    # no slot at all: nothing to go by, it books for everything it wants (a window at most)
    assert comeback_wants(spacing, requests=200, granted=0, window=1.0) == 1.0
    assert comeback_wants(1.0, requests=40, granted=0, window=1.0) == 1.0  # 1/s: a second each, no storm
    assert comeback_wants(spacing, requests=1, granted=0, window=1.0) == spacing


# ---- the urgent overdraft: admins ahead of the slots later tiers already hold ---------------------


def test_the_overdraft_is_a_quarter_of_the_headrooms_slack() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    assert RateLimiter(client, headroom=0.9).overdraft(Limit(100)) == 2
    assert RateLimiter(client, headroom=0.9).overdraft(Limit(300)) == 7
    assert RateLimiter(client, headroom=0.9).overdraft(Limit(1)) == 0  # the shipped 1 SMS/s: none
    assert RateLimiter(client, headroom=1.0).overdraft(Limit(300)) == 0  # no slack, no overdraft


def test_an_urgent_request_goes_ahead_of_the_slots_later_tiers_hold_and_pays_them_back() -> None:
    """A later tier's send threads hold the next slots: the first tier's request takes a slot now
    instead of queueing behind them (issue 17: a second incident's first admin waited behind a
    flood's ~120 ms of held slots), up to the overdraft a second; each one moves the later slots one
    interval on, and a later tier never takes one. (At 100/s, so that holding 40 slots, 444 ms of
    them, takes far less than that even on a loaded machine.)"""
    limiter = RateLimiter(redis.Redis.from_url(REDIS_URL), headroom=0.9)
    limit = Limit(100)
    interval = limiter.paced_interval(limit)
    bucket = pool_for(ChannelName.SMS, Recipient(1, PHONE), settings()).buckets[0]
    held = [limiter.claim([bucket], limit, 1.0) for _ in range(40)]  # a later tier's threads
    queue_end = held[-1].at + interval
    assert limiter.claim([bucket], limit, 1.0).at == pytest.approx(queue_end, abs=1e-5)  # not urgent
    queue_end += interval

    urgent = [limiter.claim([bucket], limit, 1.0, urgent=True) for _ in range(limiter.overdraft(limit) + 1)]
    *ahead, behind = urgent
    assert len(ahead) == 2
    for slot in ahead:  # at once, an interval apart, far ahead of the queue's end
        assert slot.index == 0 and slot.at < queue_end - 20 * interval
    assert ahead[1].at - ahead[0].at >= interval - 1e-6
    # the third in this second queues: behind the held slots, which the two pushed 2 intervals on
    assert behind.at == pytest.approx(queue_end + 2 * interval, abs=1e-5)
    later = limiter.claim([bucket], limit, 1.0)
    assert later.at == pytest.approx(behind.at + interval, abs=1e-5)
    everything = [s.at for s in (*held, *urgent, later)]
    assert len(set(everything)) == len(everything)
    assert busiest_window(everything) <= round(100 * 0.9) + 2 < 100


def test_the_first_tier_queues_behind_its_own_slots() -> None:
    """The overdraft is for a queue later tiers hold: admins alone (one batch's threads queueing on
    each other) take the next slots as always, evenly spaced, and take none ahead."""
    client = redis.Redis.from_url(REDIS_URL)
    limiter = RateLimiter(client, headroom=0.9)
    limit = Limit(300)
    bucket = pool_for(ChannelName.SMS, Recipient(1, PHONE), settings()).buckets[0]
    slots = [limiter.claim([bucket], limit, 1.0, urgent=True) for _ in range(40)]
    gaps = [b.at - a.at for a, b in itertools.pairwise(slots)]
    assert gaps == [pytest.approx(limiter.paced_interval(limit), abs=1e-5)] * 39
    assert client.exists(f"{bucket}:overdraft") == 0


def test_a_first_tier_batch_sends_ahead_of_a_later_tiers_held_slots() -> None:
    """The same through the batches' pacers, as the workers run them: a later tier's pacer holds the
    next slots, and the first tier's pacer sends its first message before them."""
    config = settings(rate_twilio_per_s=100)
    later = Pacer(ChannelName.SMS, RateLimiter(redis.Redis.from_url(REDIS_URL), 0.9), config, False, no_sleep)
    held = []
    for i in range(20):  # 222 ms of slots, inside the later tier's quarter window
        later(Recipient(i, PHONE))
        held.append(noted_slot())
    admins = Pacer(ChannelName.SMS, RateLimiter(redis.Redis.from_url(REDIS_URL), 0.9), config, True, no_sleep)
    admins(Recipient(1000, PHONE))
    first = noted_slot()
    assert first is not None and all(at is not None for at in held)
    assert first < held[-1] - 10 / 90  # not behind the 20 held slots: at once, well before the last
