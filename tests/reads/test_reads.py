"""The read queries dashboards and the API share, on SQLite and PostgreSQL: paging without gaps or
repeats, each filter, the search's normalisation, masking, and 422s naming the parameter."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dispatcher.domain.errors import NotFound, ValidationFailed
from dispatcher.domain.masking import mask_address
from dispatcher.reads.broadcasts import accepted_over_time, list_broadcasts
from dispatcher.reads.incidents import incident_story, list_incidents
from dispatcher.reads.paging import decode_cursor, encode_cursor
from dispatcher.reads.receipts import receipts
from dispatcher.store.db import Database
from dispatcher.store.models import Delivery, IncidentUpdate
from tests.reads.helpers import T0, broadcast, deliveries, incident, subscriber


def test_masks_keep_a_recipient_recognisable_but_not_reachable() -> None:
    assert mask_address("email", "jane.doe@example.com") == "j•••@e•••.com"
    assert mask_address("sms", "+447700900189") == "+44••••••••89"
    assert mask_address("sms", "+14155550123") == "+14•••••••23"
    assert (
        mask_address("webhook", "https://hooks.example.com/T0/secret?k=1") == "https://hooks.example.com/•••"
    )
    assert mask_address("webhook", "https://hooks.example.com") == "https://hooks.example.com"
    assert mask_address("chat", "#payments-acme") == "#p•••"
    assert mask_address("chat", "https://chat.example.com/room/42") == "https://chat.example.com/•••"
    assert mask_address("social", "public") == "public"
    assert mask_address("email", "not-an-email") == "•••"


def test_a_cursor_is_refused_by_another_list_naming_the_field() -> None:
    assert decode_cursor(encode_cursor("d", 42), "d") == 42
    for bad in ("", "!!!", encode_cursor("i", 42), encode_cursor("d", 2**63)):
        with pytest.raises(ValidationFailed) as err:
            decode_cursor(bad, "d", field="after")
        assert err.value.fields == ["after"]


def _all_pages(read: Any, key: str, limit: int) -> list[int]:
    seen: list[int] = []
    cursor = None
    while True:
        page = read(cursor=cursor, limit=limit)
        seen += [item.get("id", item.get("delivery_id")) for item in page[key]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_incidents_newest_first_paged_and_filtered(db: Database) -> None:
    with db.session() as session:
        ids = [incident(session, status=s).id for s in ("investigating", "resolved") * 4]
        maintenance = incident(session, kind="maintenance", status="scheduled").id
    with db.session() as session:
        paged = _all_pages(lambda **kw: list_incidents(session, **kw), "incidents", 3)
        assert paged == sorted([*ids, maintenance], reverse=True)  # no gap, no repeat
        resolved = list_incidents(session, status="resolved")["incidents"]
        assert [i["id"] for i in resolved] == sorted(ids[1::2], reverse=True)
        assert [i["id"] for i in list_incidents(session, kind="maintenance")["incidents"]] == [maintenance]
        assert "updates" not in resolved[0] and resolved[0]["message"] == {"x": 1}
        for field, value in (("status", "sleeping"), ("kind", "party")):
            with pytest.raises(ValidationFailed) as err:
                list_incidents(session, **{field: value})
            assert err.value.fields == [field]
        with pytest.raises(ValidationFailed) as err:
            list_incidents(session, cursor=encode_cursor("d", 1))
        assert err.value.fields == ["cursor"]


def test_an_incident_story_names_each_updates_broadcast_and_its_state(db: Database) -> None:
    with db.session() as session:
        inc = incident(session)
        first = IncidentUpdate(
            incident_id=inc.id, seq=1, event="incident_opened", status="investigating", message={}
        )
        second = IncidentUpdate(
            incident_id=inc.id, seq=2, event="incident_updated", status="identified", message={}
        )
        session.add_all([first, second])
        session.flush()
        b = broadcast(session, inc.id, state="completed")
        b.update_id = first.id
        incident_id, broadcast_id = inc.id, b.id
    with db.session() as session:
        story = incident_story(session, incident_id)
        assert [(u["seq"], u["broadcast_id"], u["broadcast_state"]) for u in story["updates"]] == [
            (1, broadcast_id, "completed"),
            (2, None, None),
        ]
        with pytest.raises(NotFound):
            incident_story(session, incident_id + 1000)


def test_broadcasts_paged_filtered_with_totals(db: Database) -> None:
    with db.session() as session:
        a, b = incident(session).id, incident(session).id
        ids = [
            broadcast(session, a if i % 2 else b, state="completed" if i < 3 else "sending").id
            for i in range(7)
        ]
        deliveries(session, ids[0], 10)
    with db.session() as session:
        assert _all_pages(lambda **kw: list_broadcasts(session, **kw), "broadcasts", 2) == sorted(
            ids, reverse=True
        )
        of_a = list_broadcasts(session, incident_id=a)["broadcasts"]
        assert [x["id"] for x in of_a] == sorted(ids[1::2], reverse=True)
        done = list_broadcasts(session, state="completed")["broadcasts"]
        assert {x["id"] for x in done} == set(ids[:3])
        assert {x["id"]: x["total"] for x in done}[ids[0]] == 10
        with pytest.raises(ValidationFailed) as err:
            list_broadcasts(session, state="done")
        assert err.value.fields == ["state"]


def test_receipts_page_without_gaps_and_filter(db: Database) -> None:
    with db.session() as session:
        broadcast_id = broadcast(session, incident(session).id).id
        deliveries(session, broadcast_id, 50)
        other = broadcast(session, None).id
        deliveries(session, other, 5)
    with db.session() as session:
        every = sorted(
            session.scalars(
                Delivery.__table__.select()
                .with_only_columns(Delivery.id)
                .where(Delivery.broadcast_id == broadcast_id)
            )
        )

        def read(**kw: Any) -> dict[str, Any]:
            return receipts(session, broadcast_id, **kw)

        assert _all_pages(read, "receipts", 7) == every
        failed = read(state="failed")["receipts"]
        assert len(failed) == 12 and {r["state"] for r in failed} == {"failed"}
        assert {r["last_error_code"] for r in failed} == {"21211"}
        assert {r["channel"] for r in read(channel="sms")["receipts"]} == {"sms"}
        assert len(read(channel="sms")["receipts"]) == 17
        assert {r["tier"] for r in read(tier=1)["receipts"]} == {1}
        both = read(state="failed", channel="email", tier=1)["receipts"]
        assert both and all((r["state"], r["channel"], r["tier"]) == ("failed", "email", 1) for r in both)
        since = read(since=T0 + timedelta(seconds=10), until=T0 + timedelta(seconds=20))["receipts"]
        assert [r["delivery_id"] for r in since] == every[10:20]
        naive = read(since=(T0 + timedelta(seconds=45)).replace(tzinfo=None))["receipts"]
        assert [r["delivery_id"] for r in naive] == every[45:]
        for field, kw in (
            ("state", {"state": "lost"}),
            ("channel", {"channel": "fax"}),
            ("limit", {"limit": 0}),
        ):
            with pytest.raises(ValidationFailed) as err:
                read(**kw)
            assert err.value.fields == [field]
        with pytest.raises(NotFound):
            receipts(session, broadcast_id + 1000)


def test_receipts_search_by_external_id_or_address_as_stored(db: Database) -> None:
    with db.session() as session:
        broadcast_id = broadcast(session, incident(session).id).id
        jane = subscriber(session, "cust-42", email="jane@example.com", phone="+14155550123").id
        deliveries(session, broadcast_id, 6)
        for channel, address in (("email", "jane@example.com"), ("sms", "+14155550123"), ("chat", "#ops")):
            session.add(
                Delivery(
                    broadcast_id=broadcast_id, tier=0, channel=channel, address=address, subscriber_id=jane
                )
            )
    with db.session() as session:

        def found(q: str, **kw: Any) -> list[tuple[str, str]]:
            return [
                (r["channel"], r["address"]) for r in receipts(session, broadcast_id, q=q, **kw)["receipts"]
            ]

        assert found("cust-42") == [("email", "j•••@e•••.com"), ("sms", "+14•••••••23"), ("chat", "#o•••")]
        assert found("  Jane@EXAMPLE.com ") == [("email", "j•••@e•••.com")]
        assert found("+1 (415) 555-0123") == found("14155550123") == [("sms", "+14•••••••23")]
        assert found("#ops") == [("chat", "#o•••")]
        assert found("user0@example.com", mask=False) == [("email", "user0@example.com")]
        assert found("cust-4") == [] and found("nobody@example.com") == []
        with pytest.raises(ValidationFailed) as err:
            receipts(session, broadcast_id, q="   ")
        assert err.value.fields == ["q"]


def test_accepted_over_time_counts_every_accepted_delivery_per_channel(db: Database) -> None:
    with db.session() as session:
        broadcast_id = broadcast(session, incident(session).id).id
        empty = broadcast(session, None).id
        deliveries(session, broadcast_id, 120)  # rows 1, 2, 5, 6, ... accepted, at T0 + i s
    with db.session() as session:
        chart = accepted_over_time(session, broadcast_id, buckets=10)
        assert chart["first_accepted_at"] == (T0 + timedelta(seconds=1)).isoformat()
        assert chart["last_accepted_at"] == (T0 + timedelta(seconds=118)).isoformat()
        assert chart["bucket_s"] == 12
        assert set(chart["series"]) == {"email", "sms", "chat"}
        assert sum(n for points in chart["series"].values() for _, n in points) == 60
        assert all(len(points) == 10 for points in chart["series"].values())
        assert chart["series"]["email"][0][0] == chart["first_accepted_at"]
        assert accepted_over_time(session, empty)["series"] == {}
        with pytest.raises(ValidationFailed) as err:
            accepted_over_time(session, broadcast_id, buckets=0)
        assert err.value.fields == ["buckets"]
