"""The one retry policy: what to do with a failed send. Pure, so it is tested without servers.

- permanent errors (invalid or opted-out number, hard bounce, rejected content) are final at once;
- a 429 waits exactly what the provider asked (Retry-After), else backs off;
- 5xx, timeouts and connection errors back off exponentially with jitter, up to a cap;
- after `max_attempts`, a retryable failure becomes final with its last error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from channels.base import Failure, Outcome


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 1.0
    cap_s: float = 300.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Equal jitter: half the exponential step guaranteed, half random, so retries spread out
        without ever coming back immediately."""
        step = min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1))
        return step / 2 + (rng or random).uniform(0, step / 2)

    def decide(self, outcome: Outcome, attempts: int, rng: random.Random | None = None) -> float | None:
        """Seconds until the next try, or None when the failure is final."""
        if outcome.accepted:
            raise ValueError("an accepted outcome needs no retry")
        if outcome.failure is Failure.PERMANENT or attempts >= self.max_attempts:
            return None
        if outcome.failure is Failure.RATE_LIMITED and outcome.retry_after is not None:
            return min(self.cap_s, max(0.0, outcome.retry_after))
        return self.backoff(attempts, rng)
