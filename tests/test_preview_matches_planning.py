"""Issue 12: for any message and subscriber set, the preview counts, per tier and channel, exactly the
delivery rows the broadcast then plans, under a configured `channel_policy`.

Each example starts from empty tables, imports its subscribers, asks the real API for a preview,
opens the incident as the API does (without queuing it), plans every tier by hand with the
planner (no worker), and compares the preview with the broadcast's rows grouped by (tier, channel).
A page of two subscribers makes both walks page through every tier.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from channels.base import ChannelName
from config import Settings
from dispatcher.api.schemas import PreviewIn
from dispatcher.app import create_app
from dispatcher.auth import Role, create_key
from dispatcher.domain.message import EventKind
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine import planner
from dispatcher.engine.tier_gates import public_tier_of, tiers_of
from dispatcher.incidents.broadcasts import open_incident
from dispatcher.store.db import Database
from dispatcher.store.models import Base, Broadcast, Delivery
from dispatcher.store.subscribers import import_many
from tests.harness import purge_queues

# Two lists in tier 0 and two in tier 2 ("partners" takes the default tier): a subscriber can be in
# two lists of one tier, or in lists of two tiers.
TIERS = {"admins": 0, "oncall": 0, "stakeholders": 1, "customers": 2}
LISTS = [*TIERS, "partners"]
# Small pools, so subscribers share addresses (the same email in two cases, one Slack channel).
ADDRESSES: dict[ChannelName, list[str]] = {
    ChannelName.EMAIL: ["a@example.com", "A@example.com", "b@example.com", "c@example.com"],
    ChannelName.SMS: ["+14155550101", "+14155550102"],
    ChannelName.CHAT: ["C0OPS", "#status"],
    ChannelName.WEBHOOK: ["https://hooks.example.com/a", "https://hooks.example.com/b"],
}
FIELD = {
    ChannelName.EMAIL: "email",
    ChannelName.SMS: "phone",
    ChannelName.CHAT: "slack_channel",
    ChannelName.WEBHOOK: "webhook_url",
}
COMPONENTS = ["Checkout", "Search", "API"]
REGIONS = ["eu", "us"]
# Channels a `channel_policy` can take off an opened incident (an empty list: on no event).
DROPPABLE = [ChannelName.EMAIL, ChannelName.SMS, ChannelName.CHAT, ChannelName.WEBHOOK, ChannelName.SOCIAL]


def subsets(values: list[Any], max_size: int | None = None) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.sampled_from(values), unique=True, max_size=max_size or len(values))


@st.composite
def subscriber(draw: st.DrawFn, index: int) -> SubscriberIn:
    """A valid subscriber: at least one address, preferences only on channels it has addresses for."""
    reachable = draw(st.lists(st.sampled_from(list(ADDRESSES)), unique=True, min_size=1))
    addresses = {FIELD[c]: draw(st.sampled_from(ADDRESSES[c])) for c in reachable}
    return SubscriberIn(
        external_id=f"s{index}",
        lists=draw(st.lists(st.sampled_from(LISTS), unique=True, min_size=1, max_size=2)),
        channels=draw(subsets(reachable)),  # empty: every channel with an address
        opt_outs=draw(subsets(list(ChannelName), max_size=2)),
        components=draw(subsets(COMPONENTS, max_size=2)),
        regions=draw(subsets(REGIONS, max_size=1)),
        **addresses,
    )


@st.composite
def audiences(draw: st.DrawFn) -> list[SubscriberIn]:
    count = draw(st.integers(min_value=1, max_value=9))
    return [draw(subscriber(i)) for i in range(count)]


messages = st.fixed_dictionaries(
    {"title": st.just("Checkout is failing"), "impact": st.sampled_from(["minor", "major"])},
    optional={
        "components": subsets(COMPONENTS, max_size=2),
        "regions": subsets(REGIONS, max_size=1),
        "channels": subsets([c.value for c in ChannelName], max_size=3),  # a commander's override
    },
)


def _empty(db: Database) -> None:
    """Tables emptied, as the `db` fixture leaves them: every example is its own world."""
    with db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


def _plan_every_tier(db: Database, settings: Settings, broadcast_id: int) -> None:
    """What the broadcast's tasks do, in order, in this process: each tier's rows, earliest first."""
    with db.session() as session:
        tiers = [t.tier for t in tiers_of(session, broadcast_id)]
        public = public_tier_of(session, broadcast_id, tiers)
    for tier in tiers:
        planner.plan_pages(db, settings, broadcast_id, tier, public)


def _planned(db: Database, broadcast_id: int) -> dict[tuple[int, str], int]:
    with db.session() as session:
        rows = session.execute(
            select(Delivery.tier, Delivery.channel, func.count())
            .where(Delivery.broadcast_id == broadcast_id)
            .group_by(Delivery.tier, Delivery.channel)
        ).all()
    return {(tier, channel): n for tier, channel, n in rows}


def _previewed(audience: dict[str, Any]) -> dict[tuple[int, str], int]:
    return {(t["tier"], ch): n for t in audience["tiers"] for ch, n in t["channels"].items() if n}


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planner, "PAGE", 2)


@pytest.mark.usefixtures("small_pages")
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(people=audiences(), body=messages, dropped=st.sampled_from(DROPPABLE))
def test_preview_counts_what_the_broadcast_plans(
    db: Database, people: list[SubscriberIn], body: dict[str, Any], dropped: ChannelName
) -> None:
    _empty(db)
    configured = Settings(
        database_url=db.url,
        tiers=TIERS,
        default_tier=2,
        channel_policy={dropped: []},  # the policy takes this channel off every event
    )
    with db.session() as session:
        import_many(session, configured, people)
        key = create_key(session, Role.COMMANDER, label="preview property")
    try:
        with TestClient(create_app(configured)) as client:
            response = client.post("/v1/preview", json=body, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        preview = response.json()
        assert preview["event"] == EventKind.INCIDENT_OPENED.value

        incident = PreviewIn.model_validate(body)
        with db.session() as session:
            _, broadcast = open_incident(session, configured, incident.message(), channels=incident.channels)
            broadcast_id = broadcast.id
        _plan_every_tier(db, configured, broadcast_id)
    finally:
        purge_queues()  # sends the tier-0 pages queued: no worker is to run them

    with db.session() as session:
        stored = session.get(Broadcast, broadcast_id)
        assert stored is not None and stored.policy["channels"] == preview["channels"]
    if incident.channels is None:
        assert dropped.value not in preview["channels"]
    planned = _planned(db, broadcast_id)
    example = {
        "dropped": dropped.value,
        "message": body,
        "subscribers": [p.model_dump(mode="json", exclude_defaults=True) for p in people],
    }
    assert _previewed(preview["audience"]) == planned, example
    assert preview["audience"]["total"] == sum(planned.values())
