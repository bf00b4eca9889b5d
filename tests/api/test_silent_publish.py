"""Silent publish over HTTP: `notify: false` is recorded with no broadcast, `public: false` plans only
the chosen tiers and never social, impossible combinations are 422s naming the field; and every
channel's link defaults to this service's own incident page."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, BroadcastTier, BroadcastVariant, IncidentUpdate
from tests.api.conftest import MESSAGE, PUBLIC_URL, auth, count

NO_LINK = {k: v for k, v in MESSAGE.items() if k != "status_page_url"}


def post(client: TestClient, key: str, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body, headers=auth(key))


def opened(client: TestClient, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = post(client, key, "/v1/incidents", body)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_silent_opening_and_update_are_recorded_with_no_broadcast(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    created = opened(client, keys["commander"], {**MESSAGE, "notify": False})
    assert created["broadcast"] is None
    assert created["update"] == {"seq": 1, "notify": False, "public": True, "tiers": None}
    incident_id = created["incident"]["id"]
    fixed = post(
        client,
        keys["commander"],
        f"/v1/incidents/{incident_id}/updates",
        {"summary": "Card payments fail for some customers (typo fixed).", "notify": False},
    )
    assert fixed.status_code == 201, fixed.text
    assert fixed.json()["broadcast"] is None
    assert fixed.json()["incident"]["message"]["summary"].endswith("(typo fixed).")  # it is public
    assert count(db, Broadcast) == 0
    story = client.get(f"/v1/incidents/{incident_id}", headers=auth(keys["viewer"])).json()
    assert [(u["notify"], u["public"], u["broadcast_id"]) for u in story["updates"]] == [
        (False, True, None),
        (False, True, None),
    ]
    # `notify` is not carried on: the next update, unmarked, is broadcast again
    loud = post(client, keys["commander"], f"/v1/incidents/{incident_id}/updates", {"status": "identified"})
    assert loud.status_code == 201 and loud.json()["broadcast"] is not None


def test_an_internal_update_plans_the_first_tier_only_never_social_and_leaves_the_incident_public_state(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    created = opened(client, keys["commander"], {**MESSAGE, "channels": ["email", "social"]})
    incident_id = created["incident"]["id"]
    internal = post(
        client,
        keys["commander"],
        f"/v1/incidents/{incident_id}/updates",
        {
            "status": "identified",
            "cause": "The card processor's new release.",
            "public": False,
            "channels": ["email", "social"],
        },
    )
    assert internal.status_code == 201, internal.text
    body = internal.json()
    assert body["update"] == {"seq": 2, "notify": True, "public": False, "tiers": [0]}
    assert body["broadcast"]["channels"] == ["email"]  # social is public: dropped
    assert body["incident"]["status"] == "investigating"  # the public state did not move
    assert "cause" not in body["incident"]["message"] or body["incident"]["message"]["cause"] is None
    with db.session() as session:
        tiers = session.scalars(
            select(BroadcastTier.tier).where(BroadcastTier.broadcast_id == body["broadcast"]["id"])
        ).all()
        update = session.scalars(select(IncidentUpdate).where(IncidentUpdate.seq == 2)).one()
        assert update.public is False and update.message["cause"] == "The card processor's new release."
    assert list(tiers) == [0]
    chosen = post(
        client,
        keys["commander"],
        f"/v1/incidents/{incident_id}/updates",
        {"summary": "For stakeholders only.", "public": False, "tiers": [1, 0]},
    )
    assert chosen.status_code == 201, chosen.text
    with db.session() as session:
        tiers = session.scalars(
            select(BroadcastTier.tier).where(BroadcastTier.broadcast_id == chosen.json()["broadcast"]["id"])
        ).all()
    assert sorted(tiers) == [0, 1]
    assert chosen.json()["update"]["tiers"] == [0, 1]


def test_combinations_that_reach_nobody_or_the_wrong_people_are_422_naming_the_field(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    incident_id = opened(client, keys["commander"], MESSAGE)["incident"]["id"]
    before = (count(db, IncidentUpdate), count(db, Broadcast))
    path = f"/v1/incidents/{incident_id}/updates"
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"public": False, "tiers": [7]}, ["tiers"]),  # no such tier (0, 1, 2 here; 3 is the public one)
        ({"public": False, "tiers": [3]}, ["tiers"]),
        ({"public": False, "notify": False}, ["notify", "public"]),
        ({"tiers": [0]}, ["tiers"]),  # tiers only choose an internal update's audience
        ({"public": False, "tiers": [-1]}, ["tiers.0"]),
        ({"public": False, "tiers": []}, ["tiers"]),
        ({"notify": "maybe"}, ["notify"]),
    ]
    for body, fields in cases:
        response = post(client, keys["commander"], path, {"summary": "x", **body})
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["fields"] == fields, (body, response.json())
    opening = post(client, keys["commander"], "/v1/incidents", {**MESSAGE, "public": False})
    assert opening.status_code == 422 and opening.json()["error"]["fields"] == ["public"]
    assert (count(db, IncidentUpdate), count(db, Broadcast)) == before  # nothing written


def test_links_default_to_this_service_incident_page_in_the_rendered_email_and_sms(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    created = opened(client, keys["commander"], {**NO_LINK, "channels": ["email", "sms"]})
    incident_id = created["incident"]["id"]
    link = f"{PUBLIC_URL}/status/incidents/{incident_id}"
    assert created["incident"]["message"]["status_page_url"] == link
    with db.session() as session:
        variants = {
            v.channel: v.variant
            for v in session.scalars(
                select(BroadcastVariant).where(BroadcastVariant.broadcast_id == created["broadcast"]["id"])
            )
        }
    assert link in variants["email"]["text"] and link in variants["email"]["html"]
    assert link in variants["sms"]["text"]
    # an update carries the link on; a commander's own link is kept
    update = post(client, keys["commander"], f"/v1/incidents/{incident_id}/updates", {"status": "identified"})
    assert update.json()["incident"]["message"]["status_page_url"] == link
    own = opened(client, keys["commander"], MESSAGE)
    assert own["incident"]["message"]["status_page_url"] == MESSAGE["status_page_url"]
