"""The dashboards' read endpoints over HTTP, on SQLite and PostgreSQL: paging, filters, search,
auth (401 without a key or with an unknown one; viewer, commander and admin all read, so no read is a
403), and bad input as a 422 naming the parameter."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from dispatcher.reads.paging import encode_cursor
from dispatcher.store.db import Database
from tests.api.conftest import auth
from tests.reads.helpers import broadcast, deliveries, incident, subscriber


@pytest.fixture
def world(db: Database) -> dict[str, Any]:
    with db.session() as session:
        incidents = [incident(session, status=s).id for s in ("investigating", "resolved", "investigating")]
        maintenance = incident(session, kind="maintenance", status="scheduled").id
        broadcasts = [broadcast(session, incidents[0], state=s).id for s in ("completed", "sending")]
        subscriber(session, "cust-9", email="ann@example.com")
        deliveries(session, broadcasts[1], 30)
    return {"incidents": incidents, "maintenance": maintenance, "broadcasts": broadcasts}


def _pages(client: TestClient, key: str, url: str, items: str, **params: Any) -> list[int]:
    seen: list[int] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get(url, params=query, headers=auth(key))
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [item.get("id", item.get("delivery_id")) for item in body[items]]
        if (cursor := body["next_cursor"]) is None:
            return seen


READS = [
    "/v1/incidents",
    "/v1/broadcasts",
    "/v1/broadcasts/{b}/receipts",
    "/v1/broadcasts/{b}/accepted",
    "/v1/deliveries/{d}",
]


@pytest.mark.parametrize("path", READS)
def test_every_read_needs_a_key_and_every_role_may_read(
    client: TestClient, keys: dict[str, str], world: dict[str, Any], path: str
) -> None:
    url = path.format(b=world["broadcasts"][1], d=_first_delivery(client, keys, world))
    assert client.get(url).status_code == 401
    assert client.get(url, headers=auth("od_" + "x" * 40)).status_code == 401
    for role in ("viewer", "commander", "admin"):
        assert client.get(url, headers=auth(keys[role])).status_code == 200, role


def _first_delivery(client: TestClient, keys: dict[str, str], world: dict[str, Any]) -> int:
    url = f"/v1/broadcasts/{world['broadcasts'][1]}/receipts"
    return int(
        client.get(url, params={"limit": 1}, headers=auth(keys["viewer"])).json()["receipts"][0][
            "delivery_id"
        ]
    )


def test_incidents_list_newest_first_paged_and_filtered(
    client: TestClient, keys: dict[str, str], world: dict[str, Any]
) -> None:
    everything = sorted([*world["incidents"], world["maintenance"]], reverse=True)
    assert _pages(client, keys["viewer"], "/v1/incidents", "incidents", limit=1) == everything
    investigating = _pages(
        client, keys["viewer"], "/v1/incidents", "incidents", status="investigating", limit=1
    )
    assert investigating == [world["incidents"][2], world["incidents"][0]]
    assert _pages(client, keys["viewer"], "/v1/incidents", "incidents", kind="maintenance") == [
        world["maintenance"]
    ]
    story = client.get(f"/v1/incidents/{world['incidents'][0]}", headers=auth(keys["viewer"])).json()
    assert story["id"] == world["incidents"][0] and story["updates"] == []


def test_broadcasts_list_paged_and_filtered(
    client: TestClient, keys: dict[str, str], world: dict[str, Any]
) -> None:
    ids = world["broadcasts"]
    assert _pages(client, keys["viewer"], "/v1/broadcasts", "broadcasts", limit=1) == sorted(
        ids, reverse=True
    )
    of_incident = client.get(
        "/v1/broadcasts", params={"incident_id": world["incidents"][0]}, headers=auth(keys["viewer"])
    ).json()["broadcasts"]
    assert [b["id"] for b in of_incident] == sorted(ids, reverse=True)
    assert {b["id"]: b["total"] for b in of_incident} == {ids[0]: 0, ids[1]: 30}
    sending = client.get("/v1/broadcasts", params={"state": "sending"}, headers=auth(keys["viewer"])).json()
    assert [b["id"] for b in sending["broadcasts"]] == [ids[1]]
    none = client.get(
        "/v1/broadcasts", params={"incident_id": world["maintenance"]}, headers=auth(keys["viewer"])
    )
    assert none.json() == {"broadcasts": [], "next_cursor": None}


def test_receipts_filter_search_and_page(
    client: TestClient, keys: dict[str, str], world: dict[str, Any]
) -> None:
    url = f"/v1/broadcasts/{world['broadcasts'][1]}/receipts"
    every = _pages(client, keys["viewer"], url, "receipts", limit=4)
    assert len(every) == 30 and every == sorted(set(every))  # no gap, no repeat
    failed = client.get(url, params={"state": "failed"}, headers=auth(keys["viewer"])).json()["receipts"]
    assert [r["delivery_id"] for r in failed] == every[3::4]
    assert {(r["state"], r["last_error_code"]) for r in failed} == {("failed", "21211")}
    assert _pages(client, keys["viewer"], url, "receipts", channel="sms", limit=3) == every[1::3]
    assert _pages(client, keys["viewer"], url, "receipts", tier="1", limit=3) == every[1::2]
    found = client.get(url, params={"q": "User3@Example.COM"}, headers=auth(keys["viewer"])).json()[
        "receipts"
    ]
    assert [(r["delivery_id"], r["address"]) for r in found] == [(every[3], "u•••@e•••.com")]
    phone = client.get(url, params={"q": "+1 415 555 0004"}, headers=auth(keys["viewer"])).json()["receipts"]
    assert [r["delivery_id"] for r in phone] == [every[4]]
    window = {"since": "2026-12-02T12:00:05Z", "until": "2026-12-02T13:00:10+01:00"}
    assert _pages(client, keys["viewer"], url, "receipts", **window) == every[5:10]


BAD = [
    ("/v1/incidents", {"status": "asleep"}, "status"),
    ("/v1/incidents", {"kind": "party"}, "kind"),
    ("/v1/incidents", {"cursor": "nope"}, "cursor"),
    ("/v1/incidents", {"cursor": encode_cursor("b", 3)}, "cursor"),
    ("/v1/incidents", {"limit": "0"}, "limit"),
    ("/v1/broadcasts", {"state": "done"}, "state"),
    ("/v1/broadcasts", {"incident_id": "x"}, "incident_id"),
    ("/v1/broadcasts", {"cursor": encode_cursor("i", 3)}, "cursor"),
    ("{r}", {"state": "lost"}, "state"),
    ("{r}", {"channel": "fax"}, "channel"),
    ("{r}", {"tier": "-1"}, "tier"),
    ("{r}", {"since": "yesterday"}, "since"),
    ("{r}", {"until": "2026-13-01T00:00:00Z"}, "until"),
    ("{r}", {"cursor": "!!"}, "cursor"),
    ("{r}", {"q": ""}, "q"),
    ("{r}", {"limit": "1001"}, "limit"),
    ("/v1/broadcasts/{b}/accepted", {"buckets": "0"}, "buckets"),
]


@pytest.mark.parametrize(("path", "params", "field"), BAD)
def test_bad_input_is_a_422_naming_the_parameter(
    client: TestClient,
    keys: dict[str, str],
    world: dict[str, Any],
    path: str,
    params: dict[str, str],
    field: str,
) -> None:
    b = world["broadcasts"][1]
    url = path.format(r=f"/v1/broadcasts/{b}/receipts", b=b)
    response = client.get(url, params=params, headers=auth(keys["viewer"]))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["fields"] == [field], error


def test_unknown_rows_are_404(client: TestClient, keys: dict[str, str], world: dict[str, Any]) -> None:
    for url in ("/v1/deliveries/999999", "/v1/broadcasts/999999/receipts", "/v1/broadcasts/999999/accepted"):
        response = client.get(url, headers=auth(keys["viewer"]))
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", url
    assert client.get("/v1/deliveries/0", headers=auth(keys["viewer"])).status_code == 422
