"""Global per-provider rate limits, shared by every worker: a reservation bucket in Redis.

Each call reserves its slot atomically (a Lua script, on Redis's clock so worker clocks do not
matter) and is told how long to wait for it. Slots are spaced 1/rate apart with no burst, so no
one-second window of departures sees more than the limit. `headroom` paces under the limit because
providers count arrivals, and arrivals bunch: between a thread's slot and its request reaching the
provider lie the GIL, the SDK and a busy machine (up to ~250 ms measured here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from channels.base import ChannelName, Recipient, Throttle
from config import Settings
from dispatcher.redis_client import key

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ttl = math.ceil((tat + interval - now) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', tat + interval), 'PX', ttl)
return string.format('%.6f', tat - now)
"""


@dataclass(frozen=True)
class Limit:
    per_second: float

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second


class RateLimiter:
    def __init__(self, client: redis.Redis, headroom: float = 0.8) -> None:
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self.headroom = headroom

    def reserve(self, bucket: str, limit: Limit) -> float:
        """Reserves the next slot in `bucket`; returns seconds to wait until it (0 = now)."""
        interval = limit.interval / self.headroom
        return max(0.0, float(self._reserve(keys=[bucket], args=[f"{interval:.6f}"])))

    def wait(self, bucket: str, limit: Limit, sleep: Callable[[float], None] = time.sleep) -> float:
        """Blocks until this caller's slot. A caller that wakes more than one interval past its slot
        (a stalled thread) has lost it and reserves again: late callers must not pile onto on-time ones."""
        waited = 0.0
        interval = limit.interval / self.headroom
        while True:
            delay = self.reserve(bucket, limit)
            due = time.monotonic() + delay
            if delay > 0:
                sleep(delay)
                waited += delay
            if time.monotonic() - due <= interval:
                return waited


def provider_limits(settings: Settings) -> dict[ChannelName, Limit]:
    return {
        ChannelName.EMAIL: Limit(settings.rate_sendgrid_per_s),
        ChannelName.SMS: Limit(settings.rate_twilio_per_s),
        ChannelName.CHAT: Limit(settings.rate_slack_per_channel_per_s),
        ChannelName.SOCIAL: Limit(settings.rate_x_per_window / settings.rate_x_window_s),
        ChannelName.WEBHOOK: Limit(settings.rate_webhook_per_s),
    }


def bucket_for(channel: ChannelName, recipient: Recipient, settings: Settings) -> str:
    """Which account the limit is counted against: Twilio per sender, Slack per channel."""
    if channel is ChannelName.SMS:
        return key("rate", "twilio", settings.twilio_from, settings=settings)
    if channel is ChannelName.CHAT:
        return key("rate", "slack", recipient.address, settings=settings)
    return key("rate", channel.value, settings=settings)


def throttle_for(channel: ChannelName, limiter: RateLimiter, settings: Settings) -> Throttle:
    limit = provider_limits(settings)[channel]

    def throttle(recipient: Recipient) -> None:
        limiter.wait(bucket_for(channel, recipient, settings), limit)

    return throttle


def batch_size(channel: ChannelName, max_batch: int, settings: Settings, task_seconds: float = 10.0) -> int:
    """Recipients per task: what the provider takes per call, but no more than the global limit
    lets one task send in about `task_seconds`, so a slow limit never parks a worker for minutes,
    and never more than a quarter of a lease's worth: a batch still sending when its lease ends is
    swept back and sent again by another worker while the first one carries on."""
    if channel in (ChannelName.EMAIL, ChannelName.CHAT):  # limited per request / per destination
        return max_batch
    seconds = min(task_seconds, settings.lease_s / 4)
    return max(1, min(max_batch, int(provider_limits(settings)[channel].per_second * seconds)))
