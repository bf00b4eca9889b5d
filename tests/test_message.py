"""The canonical message accepts what a commander would write and names the field of anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from dispatcher.domain.errors import TransitionError
from dispatcher.domain.message import (
    INCIDENT_STATUSES,
    MAINTENANCE_STATUSES,
    Kind,
    OutageMessage,
    Status,
    check_transition,
)

NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in exc.errors()}


def test_full_message_is_accepted() -> None:
    message = OutageMessage.model_validate(
        {
            "title": "Checkout API errors",
            "kind": "incident",
            "status": "identified",
            "impact": "major",
            "components": ["checkout", "payments"],
            "regions": ["eu-west-1"],
            "summary": "About 30% of card payments fail.",
            "details": "## Timeline\n- 13:40 errors begin",
            "cause": "A faulty database failover.",
            "workarounds": ["Pay by invoice", "Retry in a few minutes"],
            "eta": "2026-11-22T16:00:00+01:00",
            "eta_confirmed": False,
            "next_update_at": "2026-11-22T14:30:00Z",
            "data_safety": "No data was lost.",
            "compensation": "Affected accounts get a 10% credit.",
            "status_page_url": "https://status.example.com/incidents/42",
            "support_contacts": [{"label": "Support", "email": "help@example.com"}],
        }
    )
    assert message.status is Status.IDENTIFIED
    assert message.eta == datetime(2026, 11, 22, 15, 0, tzinfo=UTC)  # the instant, kept in UTC


def test_status_defaults_to_the_start_of_the_kinds_lifecycle() -> None:
    assert OutageMessage(title="x").status is Status.INVESTIGATING
    assert OutageMessage(title="x", kind=Kind.MAINTENANCE, starts_at=NOW).status is Status.SCHEDULED


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "x", "impact": "apocalyptic"}, "impact"),
        ({"title": "x", "eta": "2026-11-22T16:00:00"}, "eta"),  # naive: rejected, never guessed
        ({"title": "x", "next_update_at": "tomorrow"}, "next_update_at"),
        ({"title": "x", "status_page_url": "not a url"}, "status_page_url"),
        ({"title": "x", "support_contacts": [{"label": "S", "email": "nope"}]}, "support_contacts.0.email"),
        ({"title": "x", "workarounds": ["ok", ""]}, "workarounds.1"),
        ({"title": "x", "colour": "red"}, "colour"),  # unknown fields are refused, not dropped
        ({"title": "x\u0000y"}, "title"),  # PostgreSQL cannot store a NUL; it never gets that far
        ({"title": "x", "components": ["api\x1b[31m"]}, "components.0"),
    ],
)
def test_bad_input_names_the_field(payload: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        OutageMessage.model_validate(payload)
    assert field in error_fields(caught.value)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"title": "x", "status": "scheduled"}, "not a incident status"),
        ({"title": "x", "kind": "maintenance"}, "needs starts_at"),
        ({"title": "x", "eta_confirmed": True}, "no eta"),
        ({"title": "x", "kind": "maintenance", "starts_at": NOW, "ends_at": NOW}, "ends_at must be after"),
        ({"title": "x", "support_contacts": [{"label": "S"}]}, "needs an email, phone or url"),
    ],
)
def test_inconsistent_messages_are_explained(payload: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        OutageMessage.model_validate(payload)


def test_incident_states_move_freely_until_resolved() -> None:
    for current in INCIDENT_STATUSES[:-1]:
        for new in INCIDENT_STATUSES:
            check_transition(current, new)
    with pytest.raises(TransitionError) as caught:
        check_transition(Status.RESOLVED, Status.INVESTIGATING)
    assert "resolved" in caught.value.message and "investigating" in caught.value.message
    check_transition(Status.RESOLVED, Status.INVESTIGATING, reopen=True)


def test_maintenance_only_moves_forward() -> None:
    check_transition(Status.SCHEDULED, Status.IN_PROGRESS)
    check_transition(Status.IN_PROGRESS, Status.COMPLETED)
    check_transition(Status.SCHEDULED, Status.CANCELLED)
    for current, new in [
        (Status.IN_PROGRESS, Status.SCHEDULED),
        (Status.COMPLETED, Status.IN_PROGRESS),
        (Status.CANCELLED, Status.SCHEDULED),
        (Status.SCHEDULED, Status.COMPLETED),
        (Status.SCHEDULED, Status.RESOLVED),
    ]:
        with pytest.raises(TransitionError):
            check_transition(current, new)
        with pytest.raises(TransitionError):
            check_transition(current, new, reopen=True)


def test_stamping_sets_posted_at_in_utc_and_merge_revalidates() -> None:
    posted = OutageMessage(title="x").stamped(datetime(2026, 1, 1, 12, tzinfo=UTC))
    assert posted.posted_at == datetime(2026, 1, 1, 12, tzinfo=UTC)
    updated = posted.merged({"status": "resolved", "prevention": "More replicas."})
    assert updated.status is Status.RESOLVED and updated.posted_at is None
    with pytest.raises(ValidationError):
        posted.merged({"impact": "huge"})


# printable text: control characters are refused by design (test_bad_input_names_the_field)
text = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=120).filter(
    lambda s: s.strip() != ""
)
aware = st.datetimes(timezones=st.timezones(), min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))


@given(
    title=text,
    status=st.sampled_from(INCIDENT_STATUSES),
    impact=st.sampled_from(["none", "minor", "major", "critical"]),
    components=st.lists(text, max_size=5),
    eta=st.none() | aware,
    summary=st.none() | text,
)
def test_any_well_formed_incident_round_trips(title, status, impact, components, eta, summary) -> None:
    message = OutageMessage(
        title=title, status=status, impact=impact, components=components, eta=eta, summary=summary
    )
    again = OutageMessage.model_validate_json(message.model_dump_json())
    assert again == message
    assert again.status in INCIDENT_STATUSES


@given(status=st.sampled_from(MAINTENANCE_STATUSES), start=aware, hours=st.integers(1, 72))
def test_any_well_formed_maintenance_is_accepted(status, start, hours) -> None:
    message = OutageMessage(
        title="db upgrade",
        kind=Kind.MAINTENANCE,
        status=status,
        starts_at=start,
        ends_at=start + timedelta(hours=hours),
    )
    assert message.ends_at > message.starts_at
    assert message.starts_at.utcoffset() == timedelta(0)


def test_a_window_across_a_dst_gap_is_compared_as_instants() -> None:
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")  # 2030-03-31 02:00-03:00 does not exist there
    with pytest.raises(ValidationError, match="ends_at must be after"):
        OutageMessage(
            title="x",
            kind=Kind.MAINTENANCE,
            starts_at=datetime(2030, 3, 31, 2, 59, tzinfo=paris),
            ends_at=datetime(2030, 3, 31, 3, 0, tzinfo=paris),
        )


@given(st.dictionaries(st.text(min_size=1, max_size=10), st.integers(), min_size=1, max_size=3))
def test_unknown_fields_are_always_named(extra: dict[str, int]) -> None:
    known = set(OutageMessage.model_fields)
    extra = {k: v for k, v in extra.items() if k not in known}
    if not extra:
        return
    with pytest.raises(ValidationError) as caught:
        OutageMessage.model_validate({"title": "x", **extra})
    assert set(extra) <= error_fields(caught.value)
