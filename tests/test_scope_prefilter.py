"""A scoped message's audience is narrowed in the database (dispatcher/store/scope.py), and that
never changes who is reached: for every scope a subscriber can hold and every scope a message can
name, over a small alphabet, the rows read with the prefilter are exactly those the pure rule
(domain/audience.py `in_scope`) keeps from the whole tier. On SQLite and PostgreSQL, with pages of
two, so a page the prefilter empties must not end the tier."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pytest

from channels.base import ChannelName
from config import Settings
from dispatcher.domain import audience
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine import planner
from dispatcher.engine.audience_count import count_planned
from dispatcher.engine.planner import planning_columns, subscribers_in_tier
from dispatcher.store.db import Database
from dispatcher.store.subscribers import import_many

COMPONENTS = ["Checkout", "Search", "Zahlung-ä", "it's"]
REGIONS = ["eu", "us"]


def every_subset(values: list[str]) -> list[list[str]]:
    return [list(c) for n in range(len(values) + 1) for c in combinations(values, n)]


def read_tier(db: Database, components: list[str], regions: list[str], *, prefilter: bool) -> list[Any]:
    """Every row the planner's pager hands out for the tier, following its cursor to the end."""
    rows: list[Any] = []
    after: int | None = 0
    with db.session() as session:
        while after is not None:
            page, after = subscribers_in_tier(
                session,
                2,
                after,
                planning_columns(scoped=True),
                components if prefilter else (),
                regions if prefilter else (),
            )
            rows += page
    return rows


@pytest.fixture
def audience_of_every_scope(db: Database, monkeypatch: pytest.MonkeyPatch) -> int:
    """One subscriber per (components, regions) pair, the unscoped ones first, then a long run
    scoped to "Search" alone: pages that a message about anything else empties entirely."""
    monkeypatch.setattr(planner, "PAGE", 2)
    people = [
        SubscriberIn(external_id=f"s{i}", email=f"s{i}@example.com", components=c, regions=r)
        for i, (c, r) in enumerate((c, r) for c in every_subset(COMPONENTS) for r in every_subset(REGIONS))
    ]
    people += [
        SubscriberIn(external_id=f"search{i}", email=f"search{i}@example.com", components=["Search"])
        for i in range(9)
    ]
    people.append(SubscriberIn(external_id="last", email="last@example.com", components=["Checkout"]))
    with db.session() as session:
        import_many(session, Settings(database_url=db.url), people)
    return len(people)


def test_the_prefilter_reads_exactly_whom_the_scope_rule_keeps(
    db: Database, audience_of_every_scope: int
) -> None:
    everyone = read_tier(db, [], [], prefilter=False)
    assert len(everyone) == audience_of_every_scope
    narrowed = 0
    for components in every_subset(COMPONENTS):
        for regions in every_subset(REGIONS):
            kept = {
                sub.id
                for sub in everyone
                if audience.in_scope(sub.components, sub.regions, components, regions)
            }
            read = [sub.id for sub in read_tier(db, components, regions, prefilter=True)]
            assert read == sorted(kept), (components, regions)
            narrowed += len(everyone) - len(read)
    assert narrowed > 0  # it does narrow: fewer rows read than the tier holds


def test_a_message_past_pages_of_other_scopes_still_reaches_the_last_subscriber(
    db: Database, audience_of_every_scope: int
) -> None:
    """ "last" comes after five pages scoped to "Search" only: the planner and the preview's count
    both go on past them."""
    read = read_tier(db, ["Checkout"], ["eu"], prefilter=True)
    assert "last@example.com" in {sub.email for sub in read}
    with db.session() as session:
        counted = count_planned(session, [2], None, [ChannelName.EMAIL], ["Checkout"], ["eu"])
    reached = [sub for sub in read if audience.in_scope(sub.components, sub.regions, ["Checkout"], ["eu"])]
    assert counted[(2, ChannelName.EMAIL)] == len(reached)
