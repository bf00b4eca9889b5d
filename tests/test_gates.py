"""The tier-gate rule on its own (dispatcher/domain/gates.py): pure, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dispatcher.domain.gates import Decision, Gate, OpenedBy, decide, opening, tier_gate, turn_has_come

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CHANNELS = ("email", "sms")


def layout(tiers: int = 3, planned: int = 3, **outstanding: int) -> list[Gate]:
    """`tiers` tiers (the last public), the first `planned` of them planned; outstanding by
    `t<tier>_<channel>`, e.g. t0_sms=40."""
    return [
        Gate(tier=t, channel=c, planned=t < planned, outstanding=outstanding.get(f"t{t}_{c}", 0))
        for t in range(tiers)
        for c in CHANNELS
    ]


def run(
    gates: list[Gate], now: datetime = NOW, public_tier: int | None = 2, timeout_s: float = 60
) -> Decision:
    return decide(gates, now=now, timeout_s=timeout_s, public_tier=public_tier)


def test_slow_admin_sms_do_not_hold_customers_email() -> None:
    decision = run(layout(t0_sms=40, t0_email=0, t1_sms=5, t1_email=10))
    assert (0, "sms") in decision.starts and (0, "email") in decision.starts
    assert (0, "email", OpenedBy.ACCEPTED) in decision.opens
    assert (1, "email") in decision.starts  # email moves on
    assert (1, "sms") not in decision.starts  # SMS waits for the admins' SMS
    assert (2, "email") not in decision.starts and (2, "sms") not in decision.starts  # the public: last


def test_a_tier_still_being_planned_never_passes_its_gate() -> None:
    decision = run(layout(planned=1))  # tier 1 is being planned and has nothing outstanding yet
    assert (1, "email") in decision.starts  # its pages go out as they are planned
    assert not [o for o in decision.opens if o[0] == 1]
    assert not [s for s in decision.starts if s[0] == 2]


def test_empty_channels_open_at_once_and_the_public_post_follows_every_channel() -> None:
    decision = run(layout())
    assert sorted(decision.starts) == [(t, c) for t in range(3) for c in sorted(CHANNELS)]
    assert all(reason is OpenedBy.ACCEPTED for *_, reason in decision.opens)
    assert decision.starts.index((2, "email")) > decision.starts.index((1, "sms"))


def test_the_public_tier_waits_for_every_channel() -> None:
    decision = run(layout(t1_sms=1))
    assert (2, "email") not in decision.starts and (2, "sms") not in decision.starts
    gates = [
        Gate(t, c, True, NOW, None if (t, c) == (1, "sms") else OpenedBy.ACCEPTED)
        for t in (0, 1)
        for c in CHANNELS
    ]
    assert turn_has_come(gates, 2, "email", public_tier=None)  # were it an ordinary tier
    assert not turn_has_come(gates, 2, "email", public_tier=2)


def test_gates_open_by_timeout_per_channel_and_never_close() -> None:
    started = NOW - timedelta(seconds=60)
    gates = [
        Gate(0, "sms", planned=True, started_at=started, outstanding=30),
        Gate(0, "email", planned=True, started_at=started, opened_by=OpenedBy.ACCEPTED, outstanding=1),
        Gate(1, "sms", planned=True),
        Gate(1, "email", planned=True, started_at=NOW, outstanding=3),
    ]
    decision = run(gates, public_tier=None)
    assert (0, "sms", OpenedBy.TIMEOUT) in decision.opens
    assert (1, "sms") in decision.starts
    # a failover row made tier 0's email outstanding again: its gate stays open
    assert (0, "email") not in [(t, c) for t, c, _ in decision.opens]
    assert opening(gates[0], NOW - timedelta(seconds=1), 60) is None
    assert opening(gates[0], NOW, 60, delay_s=30) is None  # the tier's extra delay first


def test_a_tier_gate_is_open_once_every_channel_is() -> None:
    assert tier_gate([Gate(0, "email", True, NOW, OpenedBy.ACCEPTED), Gate(0, "sms", True, NOW)]) is None
    both = [Gate(0, "email", True, NOW, OpenedBy.ACCEPTED), Gate(0, "sms", True, NOW, OpenedBy.TIMEOUT)]
    assert tier_gate(both) is OpenedBy.TIMEOUT
    assert tier_gate(both[:1]) is OpenedBy.ACCEPTED


def test_nothing_changes_twice() -> None:
    gates = layout(t0_sms=1)
    decision = run(gates)
    assert len(decision.starts) == len(set(decision.starts))
    assert len(decision.opens) == len({(t, c) for t, c, _ in decision.opens})
