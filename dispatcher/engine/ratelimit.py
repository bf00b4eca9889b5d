"""Global per-provider rate limits, shared by every worker: a reservation bucket in Redis.

Each request reserves its slot atomically (a Lua script, on Redis's clock so worker clocks do not
matter). Slots are spaced 1/rate apart with no burst, so no one-second window of departures sees
more than the limit. `headroom` paces under the limit because providers count arrivals, and arrivals
bunch: between a thread's slot and its request reaching the provider lie the GIL, the SDK and a busy
machine (up to ~250 ms measured here).

No task sleeps through a limit. A batch takes only slots that start within its pacing window
(`rate_pace_window_s`, 1 s) and hands the rest of its rows back, to come back when their turn comes.
The first tier may take any slot inside the window; later tiers only one that starts within a
quarter of it, so while admins' messages want slots, later tiers' requests are refused and the next
free slots go to the admins (`reservable_within`). A handed-back batch books a turn on the bucket's
wait line (urgent line for the first tier, then the rest, first come first served), so a thousand
waiting batches come back one window's worth of slots at a time, not all at once every second. Each
books the bucket time it used last time (its slots, up to a window; a whole window if it got none):
two workers share the bucket, so a batch uses about half a window's slots, and booking it a whole
window let the line run at half the rate, both workers idle between comebacks (issue 17: 4–11 s of
the 3,000-SMS run at 100/s with no slot taken).

Refusing later tiers is not enough at a fast limit: their send threads (16 a batch) have already
reserved the next slots, about 120 ms of them at 300/s with two workers, and a second incident's
first admin queued behind those (issue 17: 122-344 ms at the flood's peak against 60-95 quiet). So
an urgent request that finds the next slots taken may take one now, ahead of them (`overdraft`: a
few a second, a quarter of the headroom's slack), and pays it back by moving the bucket's next free
slot one interval on: any second holds at most that many slots more than the paced rate, still under
the limit, and the rate over time is unchanged.

A batch taken from the urgent lane's queue never sleeps long for its slot (`hold`): one due more
than `AT_ONCE_HOLD_S` off is kept (reserved in Redis, as any slot) and its row handed back with a
countdown to it, carrying the slot; the batch's other rows come after it. The comeback goes to the
pool (engine/outbox.py `batch_queue`), sends on its kept slot (`Pacer.kept`) and paces the rest as
any first-tier batch. So the lane only makes calls that go out at once, and a second incident's
admin email never waits in it behind a first-tier SMS asleep for its slot (issue 11: up to a second
at 1 SMS/s).

A later tier's batch reserves its slots a few at a time (`CLAIM_GROUP`, never more than its requests
still to come) and its send threads take them in turn: a round trip per message cost a sender a
quarter of what its HTTP request did (`benchmarks/sms_path.py`). The first tier reserves one at a
time, so its overdraft is judged request by request.

A sender pool (several Twilio numbers) is a list of buckets: each request takes the earliest free
slot among them, and the adapter sends it from that bucket's sender.

A thread sleeps until its slot's own time, not until "delay after Redis answered": the answer can
sit unread for tens of milliseconds while other send threads hold the GIL, and a thread that counted
its delay from when it read the answer sent that much late, bunched with the threads after it
(issue 17: slot to wire p99 50 ms at 100/s on a loaded machine). `ClockSync` maps Redis's clock
onto this process's monotonic clock from the reservation calls' own round trips, so each slot has a
local due time.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import redis

from channels.base import ChannelName, NoSlot, Recipient, note_slot
from channels.registry import CHANNEL_CLASSES
from config import Settings
from dispatcher.store.redis_client import key

# KEYS: the pool's buckets, then (when ARGV[3] > 0) each bucket's set of urgent overdraft slots and
# each bucket's last urgent slot. ARGV: slot interval per bucket, the longest acceptable delay, the
# overdraft: how many slots in any second an urgent request may take ahead of a queue that later
# tiers hold (0 = none, and a request that is not urgent), and how many slots to reserve (up to; an
# overdraft slot comes alone). A queue whose last slot is urgent is the first tier's own: it is
# waited for, so admins alone stay evenly spaced.
# Returns {index of the bucket (1-based; 0 = refused), delay until the slot (or the earliest free one),
# the slot's time on Redis's clock}, three values for each slot reserved.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local max_delay = tonumber(ARGV[2])
local overdraft = tonumber(ARGV[3])
local count = tonumber(ARGV[4] or '1')
local n = #KEYS
if overdraft > 0 then n = n / 3 end
local function earliest()
  local best, best_tat = 0, nil
  for i = 1, n do
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    if best_tat == nil or tat < best_tat then best, best_tat = i, tat end
  end
  return best, best_tat
end
local best, best_tat = earliest()
local delay = best_tat - now
local last_urgent = overdraft > 0 and tonumber(redis.call('GET', KEYS[2 * n + best]) or '0') or 0
if overdraft > 0 and delay > interval and last_urgent < best_tat - interval * 1.5 then
  local od = KEYS[n + best]
  redis.call('ZREMRANGEBYSCORE', od, '-inf', now - 1)
  if redis.call('ZCARD', od) < overdraft then
    local at = now
    local last = redis.call('ZRANGE', od, -1, -1, 'WITHSCORES')
    if last[2] then at = math.max(now, tonumber(last[2]) + interval) end
    if at + interval < best_tat then
      local paid = best_tat + interval
      redis.call('ZADD', od, at, string.format('%.6f', at))
      redis.call('PEXPIRE', od, math.ceil((at + 1 - now) * 1000) + 1000)
      redis.call('SET', KEYS[best], string.format('%.6f', paid), 'PX', math.ceil((paid - now) * 1000) + 1000)
      return {best, string.format('%.6f', at - now), string.format('%.6f', at)}
    end
  end
end
if delay > max_delay then return {0, string.format('%.6f', delay), string.format('%.6f', best_tat)} end
local out = {}
for j = 1, count do
  if j > 1 then
    best, best_tat = earliest()
    delay = best_tat - now
    if delay > max_delay then break end
  end
  local ttl = math.ceil((best_tat + interval - now) * 1000) + 1000
  redis.call('SET', KEYS[best], string.format('%.6f', best_tat + interval), 'PX', ttl)
  if overdraft > 0 then redis.call('SET', KEYS[2 * n + best], string.format('%.6f', best_tat), 'PX', ttl) end
  out[#out + 1] = best
  out[#out + 1] = string.format('%.6f', delay)
  out[#out + 1] = string.format('%.6f', best_tat)
end
return out
"""

# KEYS: the urgent line, the later line, then the pool's buckets. ARGV: urgent (1/0), how much bucket
# time the handed-back rows want (capped at one window by the caller), how long before its slot to return.
# Books the batch's comeback at the end of its line (later tiers queue behind the urgent line too),
# no earlier than its next slot comes within reach; returns seconds until then.
_BOOK_TURN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local urgent = ARGV[1] == '1'
local wants = tonumber(ARGV[2])
local lookahead = tonumber(ARGV[3])
local free = nil
for i = 3, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if free == nil or tat < free then free = tat end
end
local at = math.max(now, free - lookahead)
local line = tonumber(redis.call('GET', KEYS[1]) or '0')
if not urgent then
  at = math.max(at, line)
  line = tonumber(redis.call('GET', KEYS[2]) or '0')
end
at = math.max(at, line)
local ends = at + wants
local mine = urgent and KEYS[1] or KEYS[2]
redis.call('SET', mine, string.format('%.6f', ends), 'PX', math.ceil((ends - now) * 1000) + 1000)
return string.format('%.6f', at - now)
"""


# A handed-back batch comes back this long before its next slot, not a whole window before it:
# coming back early would park its worker until the slot (at 1/s, most of every second).
COMEBACK_LEAD_S = 0.1
# Past its window, a batch whose requests find their slots free at once is not parked by the limit:
# handing it back would only re-claim the same rows. It keeps slots within 20 ms, up to 3 windows.
GRACE_DELAY_S = 0.02
GRACE_WINDOWS = 3
# A later tier's batch reserves up to this many slots in one call; its send threads take them in turn.
# More would hold more slots ahead of a second incident's admins (the overdraft's business).
CLAIM_GROUP = 4
# On the urgent lane a request sleeps at most this long for its slot; a later one is kept for a
# comeback. More than COMEBACK_LEAD_S, so a comeback that arrives on time finds its slot within it.
AT_ONCE_HOLD_S = 0.15


@dataclass(frozen=True)
class Limit:
    per_second: float

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second


@dataclass(frozen=True)
class Pool:
    """Where a request's slot can come from: one bucket per sender, each with its own `limit`.
    `senders[i]` is what the adapter sends from when it got a slot of `buckets[i]` (None: no choice)."""

    buckets: tuple[str, ...]
    limit: Limit
    senders: tuple[str | None, ...]

    @property
    def interval(self) -> float:
        """The pool's combined slot spacing (unpaced by headroom)."""
        return self.limit.interval / len(self.buckets)


@dataclass(frozen=True)
class Slot:
    index: int | None  # which bucket of the pool; None: refused
    delay: float  # seconds from Redis's now until the slot
    at: float  # the slot, epoch seconds on Redis's clock
    due: float  # the slot on this process's monotonic clock


class ClockSync:
    """Redis's clock on this process's monotonic clock, NTP-style: a call sent at local `sent` and
    answered at `received` saw Redis's `remote` somewhere in between, so Redis is at least
    `remote - received` ahead of us. The largest such bound of the last `keep` calls (the one with
    the quickest answer, in effect) maps a slot to a local time never before it, and late by at most
    that call's round trip: a request sent before its slot bunches with the one before it (the
    midpoint estimate sent up to 0.7% of them, up to 5 ms early). Recent calls only, so a clock
    step or drift is followed. Thread-safe."""

    def __init__(self, keep: int = 64) -> None:
        self._ahead: deque[float] = deque(maxlen=keep)  # lower bounds of (Redis's clock - ours)
        self._lock = threading.Lock()

    def observe(self, sent: float, received: float, remote: float) -> None:
        del sent  # Redis answered before `received`: that bound is the one that never sends early
        with self._lock:
            self._ahead.append(remote - received)

    def local(self, remote: float) -> float:
        """`remote` (Redis's clock) as a local monotonic time. Before any observation (a process
        whose first request uses a slot kept by another), this machine's wall clock stands in."""
        with self._lock:
            ahead = max(self._ahead) if self._ahead else time.time() - time.monotonic()
        return remote - ahead


def busiest_window(times: Iterable[float], width: float = 1.0) -> int:
    """The most `times` in any window of `width` seconds, counted as a provider counts arrivals
    (the window (t - width, t]): what a schedule must keep at or under the limit."""
    ordered = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - width:
            first += 1
        best = max(best, last - first + 1)
    return best


class RateLimiter:
    def __init__(self, client: redis.Redis, headroom: float = 0.8) -> None:
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._book = client.register_script(_BOOK_TURN)
        self.headroom = headroom
        self.clock = ClockSync()

    def paced_interval(self, limit: Limit) -> float:
        """The slot spacing, rounded *up* to the microsecond Redis keeps: rounded to nearest, 1/90 s
        became 11.111 ms and 91 slots fitted in one second."""
        return math.ceil(limit.interval / self.headroom * 1e6 - 1e-6) / 1e6

    def overdraft(self, limit: Limit) -> int:
        """Slots in any second an urgent request may take ahead of the queue: a quarter of the
        headroom's slack (at 0.9: 2 at 100/s, 7 at 300/s; none at 1/s or with no headroom). The
        slack is there for arrivals that bunch (up to ~45 ms measured at 100/s), so most of it stays."""
        return math.floor(limit.per_second * (1 - self.headroom) / 4 + 1e-9)

    def claim(self, buckets: Sequence[str], limit: Limit, max_delay: float, urgent: bool = False) -> Slot:
        """Reserves the earliest slot among `buckets` if it starts within `max_delay` seconds; a
        refusal (index None) reserves nothing and says when the earliest slot is. An `urgent` request
        (the first tier's) that finds the next slots held by later tiers may take one now, ahead of
        them, up to `overdraft` such slots in any second; it pays the slot back by moving the
        bucket's next free slot one interval on, so the rate over time is unchanged. Behind the
        first tier's own slots it queues as any request."""
        return self.claim_many(buckets, limit, max_delay, urgent)[0]

    def claim_many(
        self, buckets: Sequence[str], limit: Limit, max_delay: float, urgent: bool = False, count: int = 1
    ) -> list[Slot]:
        """`claim` for up to `count` slots in one call, each the earliest left, all within
        `max_delay` (fewer if fewer are); a refusal is one Slot with index None. One round trip
        cost a sender about as much CPU as a quarter of its HTTP request (benchmarks/sms_path.py)."""
        interval = self.paced_interval(limit)
        overdraft = self.overdraft(limit) if urgent else 0
        keys = list(buckets)
        if overdraft:
            keys += [f"{b}:overdraft" for b in buckets] + [f"{b}:urgent" for b in buckets]
        args = [f"{interval:.6f}", f"{max(0.0, max_delay):.6f}", str(overdraft), str(max(1, count))]
        sent = time.monotonic()
        reply = self._reserve(keys=keys, args=args)
        received = time.monotonic()
        self.clock.observe(sent, received, float(reply[2]) - float(reply[1]))
        slots = []
        for i in range(0, len(reply), 3):
            index, delay, at = int(reply[i]), float(reply[i + 1]), float(reply[i + 2])
            slots.append(Slot(index - 1 if index else None, max(0.0, delay), at, self.clock.local(at)))
        return slots

    def try_reserve(self, buckets: Sequence[str], limit: Limit, max_delay: float) -> tuple[int | None, float]:
        """`claim` as (index of the bucket or None, seconds to wait for the slot)."""
        slot = self.claim(buckets, limit, max_delay)
        return slot.index, slot.delay

    def reserve(self, bucket: str, limit: Limit) -> float:
        """Reserves the next slot in `bucket`, however far; returns seconds to wait until it (0 = now)."""
        return self.try_reserve([bucket], limit, float("inf"))[1]

    def book_turn(self, pool: Pool, urgent: bool, wants: float, lookahead: float) -> float:
        """Seconds until a handed-back batch should come back (see _BOOK_TURN)."""
        lines = [f"{pool.buckets[0]}:line:urgent", f"{pool.buckets[0]}:line:later"]
        at = self._book(
            keys=[*lines, *pool.buckets], args=["1" if urgent else "0", f"{wants:.6f}", f"{lookahead:.6f}"]
        )
        return max(0.0, float(at))


def limit_for(channel: ChannelName, settings: Settings) -> Limit:
    """A channel's limit, as its adapter declares it (`rate_per_s`): the provider's fact. Asked for
    every message (`pool_for`), so it builds this channel's alone."""
    return Limit(CHANNEL_CLASSES[channel].rate_per_s(settings))


def pool_for(channel: ChannelName, recipient: Recipient, settings: Settings) -> Pool:
    """Which account the limit is counted against: Twilio per sender (or per messaging service),
    Slack per channel, the rest per provider account."""
    limit = limit_for(channel, settings)
    if channel is ChannelName.SMS:
        service = settings.twilio_messaging_service_sid
        if service:
            return Pool((key("rate", "twilio", service, settings=settings),), limit, (None,))
        numbers = settings.twilio_from_numbers
        buckets = tuple(key("rate", "twilio", n, settings=settings) for n in numbers)
        return Pool(buckets, limit, numbers if len(numbers) > 1 else (None,))  # one: sent as built
    if channel is ChannelName.CHAT:
        return Pool((key("rate", "slack", recipient.address, settings=settings),), limit, (None,))
    return Pool((key("rate", channel.value, settings=settings),), limit, (None,))


def bucket_for(channel: ChannelName, recipient: Recipient, settings: Settings) -> str:
    """The (first) bucket a recipient's requests count against."""
    return pool_for(channel, recipient, settings).buckets[0]


@dataclass
class Pacer:
    """One batch's rate limiting: slots within its window or none. Thread-safe: the adapter's send
    threads share it. After a pool refuses once, the batch asks it no more (its window is full)."""

    channel: ChannelName
    limiter: RateLimiter
    settings: Settings
    urgent: bool
    sleep: Callable[[float], None] = time.sleep
    hold: float = math.inf  # the longest sleep for a slot; further off, the slot is kept for a comeback
    started: float = field(default_factory=time.monotonic)
    refused: dict[Pool, int] = field(default_factory=dict)  # pool -> requests handed back
    granted: dict[Pool, int] = field(default_factory=dict)  # pool -> slots taken
    # slots an earlier run of the batch kept for its rows: delivery id -> (bucket index, slot time)
    kept: dict[int, tuple[int, float]] = field(default_factory=dict)
    # slots this run keeps for a comeback: delivery id -> (bucket index, slot time, local due time)
    reserved: dict[int, tuple[int, float, float]] = field(default_factory=dict)
    # how many requests the batch will make (0: unknown): a later tier's batch then reserves up to
    # CLAIM_GROUP slots in one call and its threads take them in turn (`_spares`)
    requests: int = 0
    _asked: int = 0
    _spares: dict[Pool, deque[Slot]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _claiming: threading.Lock = field(default_factory=threading.Lock)

    @property
    def window(self) -> float:
        """The pacing window, never more than a quarter lease: rows stay `sending` for about this long."""
        return min(self.settings.rate_pace_window_s, self.settings.lease_s / 4)

    @property
    def lookahead(self) -> float:
        return self.window if self.urgent else self.window / 4

    def _refuse(self, pool: Pool) -> NoSlot:
        with self._lock:
            self.refused[pool] = self.refused.get(pool, 0) + 1
        return NoSlot(pool.buckets[0])

    def __call__(self, recipient: Recipient) -> str | None:
        """Waits until this request's slot (at most the window) and returns its sender, or raises
        NoSlot. A caller that wakes more than one interval past its slot (a stalled thread) has lost
        it and reserves again: late callers must not pile onto on-time ones. Late is measured against
        the slot's own time (`Slot.due`), not against when the reservation's answer was read."""
        pool = pool_for(self.channel, recipient, self.settings)
        interval = self.limiter.paced_interval(pool.limit)
        with self._lock:
            self._asked += 1
        kept = self.kept.pop(recipient.delivery_id, None)
        if kept is not None and kept[0] < len(pool.buckets):
            index, at = kept
            if self._use(pool, index, at, self.limiter.clock.local(at), interval):
                return pool.senders[index]
        while True:
            slot = self._next_slot(pool)
            assert slot.index is not None
            if slot.due - time.monotonic() > self.hold:
                with self._lock:  # kept for this row's comeback; the batch's other rows come after it
                    self.reserved[recipient.delivery_id] = (slot.index, slot.at, slot.due)
                    self.refused.setdefault(pool, 0)
                raise NoSlot(pool.buckets[0])
            if self._use(pool, slot.index, slot.at, slot.due, interval):
                return pool.senders[slot.index]

    def _next_slot(self, pool: Pool) -> Slot:
        """A slot this batch reserved and no thread has taken yet, else a new reservation: one slot
        for the first tier (its overdraft goes one request at a time), up to CLAIM_GROUP for a later
        tier's batch, never more than its requests still to come. Raises NoSlot when refused."""
        with self._claiming:
            spares = self._spares.get(pool)
            if spares:
                return spares.popleft()
            if pool in self.refused:
                raise self._refuse(pool)
            max_delay = self._max_delay()
            if max_delay is None:
                raise self._refuse(pool)
            group = 1 if self.urgent else max(1, min(CLAIM_GROUP, self.requests - self._asked + 1))
            slots = self.limiter.claim_many(pool.buckets, pool.limit, max_delay, self.urgent, group)
            if slots[0].index is None:
                raise self._refuse(pool)
            self._spares[pool] = deque(slots[1:])
            return slots[0]

    def _use(self, pool: Pool, index: int, at: float, due: float, interval: float) -> bool:
        """Sleeps until the slot; whether it is still this request's (woken within an interval)."""
        wait = due - time.monotonic()
        if wait > 0:
            self.sleep(wait)
        if time.monotonic() - due > interval:
            return False
        with self._lock:
            self.granted[pool] = self.granted.get(pool, 0) + 1
        note_slot(at)
        return True

    def _max_delay(self) -> float | None:
        """How far off a slot this request may take. Inside the window: up to the tier's lookahead.
        Past it, a batch still sending (a busy machine, not the limit, holds it back) keeps only
        slots that are free right now, for up to GRACE_WINDOWS windows; then it hands the rest back."""
        elapsed = time.monotonic() - self.started
        if elapsed < self.window:
            return min(self.lookahead, self.window - elapsed)
        if elapsed < self.window * GRACE_WINDOWS:
            return min(self.lookahead, GRACE_DELAY_S)
        return None

    def comebacks(self) -> dict[str, float]:
        """Books a turn for each pool that refused requests; returns seconds until it, by first bucket."""
        out: dict[str, float] = {}
        for pool, requests in self.refused.items():
            if not requests:  # only a kept slot: its row comes back at it (`kept_slots`)
                continue
            spacing = self.limiter.paced_interval(pool.limit) / len(pool.buckets)
            wants = comeback_wants(spacing, requests, self.granted.get(pool, 0), self.window)
            lead = min(self.lookahead, COMEBACK_LEAD_S)
            out[pool.buckets[0]] = self.limiter.book_turn(pool, self.urgent, wants, lead)
        return out

    def kept_slots(self) -> dict[int, tuple[list[float], float]]:
        """The slots kept for a comeback: delivery id -> ([bucket index, slot time], seconds until
        the row should come back: COMEBACK_LEAD_S before its slot)."""
        now = time.monotonic()
        return {
            delivery_id: ([index, at], max(0.0, due - now - COMEBACK_LEAD_S))
            for delivery_id, (index, at, due) in self.reserved.items()
        }


def comeback_wants(spacing: float, requests: int, granted: int, window: float) -> float:
    """How much bucket time a handed-back batch books on the line: what it will use when it comes
    back, which is what it used this time (`granted` slots, sharing the bucket with other workers),
    no more than its `requests` left and one window. A batch that got no slot books for all it
    wants (up to a window): it has no share to go by, and must not come back in a storm."""
    use = min(requests, granted) if granted else requests
    return max(spacing, min(window, use * spacing))


def batch_size(channel: ChannelName, max_batch: int, settings: Settings) -> int:
    """Recipients per task: what the provider takes per call. A paced batch holds a worker for at
    most its pacing window and hands the rest back, so a slow limit no longer shrinks batches."""
    del channel, settings
    return max_batch
