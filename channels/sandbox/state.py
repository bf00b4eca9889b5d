"""What the sandbox remembers: recorded messages, per-provider stats and the injected faults.

Shared between the server's event-loop thread and the test / control thread, so every mutation
takes one lock; the handlers only do O(1) work under it.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PROVIDERS = ("sendgrid", "twilio", "slack", "x", "webhook")
ARRIVALS_KEPT = 200_000
CALLBACKS_KEPT = 200_000  # latencies and lags kept for the percentiles


@dataclass
class FaultConfig:
    """Faults for one provider. Rates are probabilities in [0, 1], drawn from a seeded RNG."""

    latency_ms: float = 0.0
    error_rate: float = 0.0  # answer 5xx
    error_status: int = 503
    rate_429: float = 0.0  # answer 429 at random
    retry_after_s: float = 1.0
    timeout_rate: float = 0.0  # hang for `hang_s` (longer than the client's timeout), then 504
    hang_s: float = 30.0
    rate_limit_per_s: float | None = None  # 429 beyond it (slack: per channel)
    seed: int = 0
    callback_delay_ms: float = 0.0  # before each status webhook / event POST
    callback_drop_rate: float = 0.0  # status webhooks lost on the way (the status APIs still know)
    # SendGrid: hard bounce / dropped addresses (event webhook says so; the send itself is 202)
    bounce: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    # Twilio: refused at create (21211 / 21610), or accepted then undelivered / failed in callbacks
    invalid_numbers: list[str] = field(default_factory=list)
    opted_out: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # Twilio: the account's own numbers; a From outside them is refused (21606). Empty = any number.
    senders: list[str] = field(default_factory=list)
    # Slack: channel -> error string ("channel_not_found", "not_in_channel", "is_archived"...)
    bad_channels: list[str] = field(default_factory=list)
    channel_errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Window:
    """Requests in the last second: the current count and the highest count ever seen."""

    __slots__ = ("max", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.max = 0

    def hit(self, now: float) -> int:
        self.times.append(now)
        while self.times and self.times[0] <= now - 1.0:
            self.times.popleft()
        self.max = max(self.max, len(self.times))
        return len(self.times)

    def count(self, now: float) -> int:
        while self.times and self.times[0] <= now - 1.0:
            self.times.popleft()
        return len(self.times)


@dataclass
class _ProviderStats:
    calls: int = 0
    accepted: int = 0
    rejected: int = 0
    faults: int = 0
    callbacks_sent: int = 0
    callbacks_failed: int = 0  # non-2xx answers and no answer at all
    callbacks_non_2xx: int = 0
    callback_reports: int = 0  # status reports in the callbacks answered 2xx (SendGrid: events)
    callbacks_errors: int = 0  # no answer: refused, reset, timed out
    callbacks_dropped: int = 0
    # seconds, one per answered POST, and submit to answer: the latest CALLBACKS_KEPT only, so a
    # sandbox left running (`up`) does not grow without end
    callback_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=CALLBACKS_KEPT))
    callback_lags: deque[float] = field(default_factory=lambda: deque(maxlen=CALLBACKS_KEPT))
    callback_window: _Window = field(default_factory=_Window)
    callbacks_first_at: float | None = None  # wall time of the first and the last answer
    callbacks_last_at: float | None = None
    window: _Window = field(default_factory=_Window)
    channels: dict[str, _Window] = field(default_factory=dict)
    # (wall-clock arrival, the slot the sender says it had, when it says it sent): the pacing
    # benchmark's raw data; the last two None for requests that carry no SLOT_HEADER. The latest
    # ARRIVALS_KEPT only, so a sandbox left running (`up`) does not grow without end.
    arrivals: deque[tuple[float, float | None, float | None]] = field(
        default_factory=lambda: deque(maxlen=ARRIVALS_KEPT)
    )


class SandboxState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        # provider message id -> its records (a SendGrid id covers a whole request): the status APIs
        self.by_message_id: dict[str, list[dict[str, Any]]] = {}
        self.faults: dict[str, FaultConfig] = {p: FaultConfig() for p in PROVIDERS}
        self.rngs: dict[str, random.Random] = {p: random.Random(0) for p in PROVIDERS}
        self.stats: dict[str, _ProviderStats] = {p: _ProviderStats() for p in PROVIDERS}
        self.limit_windows: dict[tuple[str, str], _Window] = {}
        self.tweets: set[str] = set()
        self.event_webhook_url: str | None = None
        self._seq = 0

    # faults
    def set_faults(self, provider: str, config: FaultConfig) -> None:
        self._check(provider)
        with self.lock:
            self.faults[provider] = config
            self.rngs[provider] = random.Random(config.seed)
            self.limit_windows = {k: w for k, w in self.limit_windows.items() if k[0] != provider}

    def clear_faults(self) -> None:
        with self.lock:
            self.faults = {p: FaultConfig() for p in PROVIDERS}
            self.rngs = {p: random.Random(0) for p in PROVIDERS}
            self.limit_windows = {}

    def draw(self, provider: str) -> float:
        with self.lock:
            return self.rngs[provider].random()

    def over_limit(self, provider: str, key: str, limit: float) -> float | None:
        """Seconds until a slot frees if this request would exceed `limit` per second, else None
        (and the request is counted)."""
        now = time.monotonic()
        with self.lock:
            window = self.limit_windows.setdefault((provider, key), _Window())
            if window.count(now) >= limit:
                return max(0.0, window.times[0] + 1.0 - now)
            window.hit(now)
            return None

    # stats
    def count_call(
        self, provider: str, channel_key: str | None = None, stamp: tuple[float, float] | None = None
    ) -> None:
        """A request arrived (before any injected latency): counted in the 1-second windows, and its
        wall-clock arrival kept with the (slot, sent) its sender stamped on it (SLOT_HEADER)."""
        now = time.monotonic()
        wall = time.time()
        with self.lock:
            stats = self.stats[provider]
            stats.calls += 1
            stats.window.hit(now)
            stats.arrivals.append((wall, *(stamp or (None, None))))
            if channel_key is not None:
                stats.channels.setdefault(channel_key, _Window()).hit(now)

    def arrivals(self, provider: str) -> list[tuple[float, float | None, float | None]]:
        self._check(provider)
        with self.lock:
            return list(self.stats[provider].arrivals)

    def count_result(self, provider: str, *, accepted: bool, fault: bool = False) -> None:
        with self.lock:
            stats = self.stats[provider]
            if accepted:
                stats.accepted += 1
            else:
                stats.rejected += 1
            if fault:
                stats.faults += 1

    def count_callback(
        self,
        provider: str,
        *,
        ok: bool,
        dropped: bool = False,
        status: int | None = None,
        latency_s: float | None = None,
        lag_s: float | None = None,
        reports: int = 1,
    ) -> None:
        """One status webhook: dropped on purpose (a fault), or POSTed with its answer's `status`
        (None: no answer) after `latency_s` and `lag_s` since the job was queued."""
        now, wall = time.monotonic(), time.time()
        with self.lock:
            s = self.stats[provider]
            if dropped:
                s.callbacks_dropped += 1
                return
            if ok:
                s.callbacks_sent += 1
                s.callback_reports += reports
            else:
                s.callbacks_failed += 1
                if status is None:
                    s.callbacks_errors += 1
                else:
                    s.callbacks_non_2xx += 1
            if latency_s is not None:
                if status is not None:
                    s.callback_latencies.append(latency_s)
                s.callback_window.hit(now)
                s.callbacks_first_at = s.callbacks_first_at or wall
                s.callbacks_last_at = wall
            if lag_s is not None:
                s.callback_lags.append(lag_s)

    def stats_json(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {}
            for name, s in self.stats.items():
                entry: dict[str, Any] = {
                    "calls": s.calls,
                    "accepted": s.accepted,
                    "rejected": s.rejected,
                    "faults": s.faults,
                    "callbacks_sent": s.callbacks_sent,
                    "callbacks_failed": s.callbacks_failed,
                    "callbacks_dropped": s.callbacks_dropped,
                    "max_per_1s": s.window.max,
                }
                if s.callbacks_first_at is not None:
                    entry["callbacks"] = {
                        "reports": s.callback_reports,
                        "non_2xx": s.callbacks_non_2xx,
                        "errors": s.callbacks_errors,
                        "latency_ms": percentiles_ms(s.callback_latencies),
                        "lag_ms": percentiles_ms(s.callback_lags),
                        "max_per_1s": s.callback_window.max,
                        "first_at": s.callbacks_first_at,
                        "last_at": s.callbacks_last_at,
                    }
                if s.channels:
                    entry["max_per_1s_by_channel"] = {k: w.max for k, w in s.channels.items()}
                out[name] = entry
            out["messages"] = len(self.records)
            return out

    # records
    def add_records(self, records: list[dict[str, Any]]) -> None:
        with self.lock:
            for record in records:
                self._seq += 1
                record["seq"] = self._seq
                message_id = record.get("provider_message_id")
                if message_id:
                    self.by_message_id.setdefault(str(message_id), []).append(record)
            self.records.extend(records)

    def find(self, message_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.by_message_id.get(message_id, ()))

    def clear_records(self) -> None:
        """Forget messages, stats and posted tweets (a fresh run), not the faults."""
        with self.lock:
            self.records = []
            self.by_message_id = {}
            self.stats = {p: _ProviderStats() for p in PROVIDERS}
            self.tweets = set()

    def remember_tweet(self, text: str) -> bool:
        """False if this exact text was posted before (X refuses duplicates)."""
        with self.lock:
            if text in self.tweets:
                return False
            self.tweets.add(text)
            return True

    @staticmethod
    def _check(provider: str) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")


def percentiles_ms(values: Iterable[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds (nearest rank), and how many values."""
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))] * 1000, 2)

    return {"p50": rank(0.5), "p99": rank(0.99), "max": round(ordered[-1] * 1000, 2), "n": len(ordered)}


def apply_substitutions(text: str, substitutions: dict[str, str]) -> str:
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text


def render_record(record: dict[str, Any], *, include_html: bool = False) -> dict[str, Any]:
    """A record as the API shows it: email text/html substituted on the way out (stored once per
    request, not per recipient, so 100k recorded emails stay small)."""
    out = {k: v for k, v in record.items() if not k.startswith("_")}
    if "_text" in record:
        subs = record.get("substitutions") or {}
        out["text"] = apply_substitutions(record["_text"], subs)
        if include_html and record.get("_html") is not None:
            out["html"] = apply_substitutions(record["_html"], subs)
    return out
