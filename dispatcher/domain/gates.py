"""The tier-gate rule, in one place and pure: which (tier, channel) may start, and which gates open.

The rule, per channel:
- tier k+1 starts on a channel once tier k's gate on that channel has opened; the first tier starts
  on every channel at once. Admins' SMS crawling at 1/s never holds customers' email, and admins
  still hear first on every channel;
- a tier's gate on a channel opens when the tier is fully planned (a tier still being planned never
  passes its gate), its sends on that channel have started, and nothing of it on that channel is
  outstanding (every delivery accepted by its provider or final; rows waiting out quiet hours do
  not count) — `accepted` — or when the gate timeout has passed since it started there — `timeout`;
- the public tier (the social post, last) starts only once every earlier gate on every channel has
  opened: the public hears after everyone the service owes a direct message;
- gates never close: a failover row added to a channel whose gate already opened is sent at its own
  tier's urgency, it does not hold back the next tier there; added before, it holds the gate like
  any other row of that channel.

`decide` works out everything one look at a broadcast allows (opening one gate can start the next
tier, which, if empty on that channel, opens at once); fanout applies it with conditional updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

# A gate checked a hair before its timeout (a countdown that fires early) still opens.
TIMEOUT_TOLERANCE = 0.99


class OpenedBy(StrEnum):
    ACCEPTED = "accepted"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Gate:
    """What the rule needs to know about one tier on one channel."""

    tier: int
    channel: str
    planned: bool  # the tier's planning has finished
    started_at: datetime | None = None  # when the tier's sends on this channel were released
    opened_by: OpenedBy | None = None
    outstanding: int = 0  # not yet accepted nor final, less rows waiting out quiet hours


@dataclass(frozen=True)
class Decision:
    starts: list[tuple[int, str]] = field(default_factory=list)
    opens: list[tuple[int, str, OpenedBy]] = field(default_factory=list)


def timeout_at(gate: Gate, timeout_s: float, delay_s: float = 0.0) -> datetime | None:
    """When the gate opens by timeout (the tier's extra delay, then the gate timeout)."""
    if gate.started_at is None:
        return None
    return gate.started_at + timedelta(seconds=delay_s + timeout_s)


def turn_has_come(gates: Sequence[Gate], tier: int, channel: str, public_tier: int | None) -> bool:
    """Every earlier gate this tier waits for is open: on its own channel, or, for the public
    tier, on every channel."""
    return all(
        g.opened_by is not None
        for g in gates
        if g.tier < tier and (tier == public_tier or g.channel == channel)
    )


def opening(gate: Gate, now: datetime, timeout_s: float, delay_s: float = 0.0) -> OpenedBy | None:
    """How this gate opens now, if it does."""
    if gate.opened_by is not None or gate.started_at is None or not gate.planned:
        return None
    if gate.outstanding <= 0:
        return OpenedBy.ACCEPTED
    elapsed = (now - gate.started_at).total_seconds()
    return OpenedBy.TIMEOUT if elapsed >= (delay_s + timeout_s) * TIMEOUT_TOLERANCE else None


def decide(
    gates: Sequence[Gate],
    *,
    now: datetime,
    timeout_s: float,
    public_tier: int | None,
    delays: Mapping[int, float] | None = None,
) -> Decision:
    """Every start and opening that follows from `gates` at `now`, to a fixed point, in tier order."""
    delays = delays or {}
    state = {(g.tier, g.channel): g for g in gates}
    decision = Decision()
    changed = True
    while changed:
        changed = False
        current = sorted(state.values(), key=lambda g: (g.tier, g.channel))
        for gate in current:
            key = (gate.tier, gate.channel)
            if gate.started_at is None and turn_has_come(current, gate.tier, gate.channel, public_tier):
                gate = state[key] = replace(gate, started_at=now)
                decision.starts.append(key)
                changed = True
            reason = opening(gate, now, timeout_s, delays.get(gate.tier, 0.0))
            if reason is not None:
                state[key] = replace(gate, opened_by=reason)
                decision.opens.append((gate.tier, gate.channel, reason))
                changed = True
        # a pass that changed something may have opened the way for an earlier-sorted gate
    return decision


def tier_gate(gates: Sequence[Gate]) -> OpenedBy | None:
    """A tier's gate as a whole: open once open on every channel; `timeout` if any channel timed out."""
    if not gates or any(g.opened_by is None for g in gates):
        return None
    return OpenedBy.TIMEOUT if any(g.opened_by is OpenedBy.TIMEOUT for g in gates) else OpenedBy.ACCEPTED
