"""A delivery's story told by the real pipeline: a uvicorn API, a Celery worker and the provider
sandbox, whose signed status callbacks come back to the API. An admin's SMS to an invalid number
fails (21211) and fails over to email; another's SMS is accepted and delivered. Their stories, read
back from GET /v1/deliveries/{id}, hold every move in order, each attempt with the provider's
answer, the failover chain from both ends, and masked addresses."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from dispatcher.auth import Role, create_key
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.store.db import Database
from tests.api.test_end_to_end import Api, api  # noqa: F401  (the fixture)
from tests.harness import Harness

pytestmark = pytest.mark.slow

BAD, GOOD = "+14155550101", "+14155550102"


def _story(service: Api, key: str, delivery_id: int) -> dict[str, Any]:
    response = httpx.get(
        f"{service.url}/v1/deliveries/{delivery_id}", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _path(story: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(kind, from, to) of each event, less any claim handed straight back for a rate-limit slot."""
    events = story["events"]
    kept = []
    for i, e in enumerate(events):
        handed_back = e["kind"] == "no_slot" or (i + 1 < len(events) and events[i + 1]["kind"] == "no_slot")
        if not handed_back:
            kept.append((e["kind"], e["from"], e["to"]))
    return kept


def test_a_real_delivery_story_with_its_failover_chain(api: Api, harness: Harness, db: Database) -> None:  # noqa: F811
    with db.session() as session:
        viewer = create_key(session, Role.VIEWER)
    harness.subscribers(
        [
            SubscriberIn(
                external_id="oncall",
                lists=["admins"],
                email="OnCall@Example.com",
                phone=BAD,
                channels=["sms"],
            ),
            SubscriberIn(
                external_id="lead", lists=["admins"], email="lead@example.com", phone=GOOD, channels=["sms"]
            ),
        ]
    )
    harness.sandbox.set_faults("twilio", invalid_numbers=[BAD])
    harness.worker()
    broadcast_id = harness.open(channels=["sms"])
    harness.wait(broadcast_id)
    headers = {"Authorization": f"Bearer {viewer}"}
    receipts_url = f"{api.url}/v1/broadcasts/{broadcast_id}/receipts"
    deadline = time.monotonic() + 60
    while True:  # the providers' delivered callbacks arrive after the broadcast completes
        rows = {
            (r["channel"], r["subscriber"]): r
            for r in httpx.get(receipts_url, headers=headers).json()["receipts"]
        }
        if {r["state"] for k, r in rows.items() if k != ("sms", "oncall")} == {
            "delivered"
        } or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    failed, failover, good = rows[("sms", "oncall")], rows[("email", "oncall")], rows[("sms", "lead")]

    delivered = _story(api, viewer, good["delivery_id"])
    assert _path(delivered) == [
        ("planned", None, "pending"),
        ("claim", "pending", "sending"),
        ("attempt", "sending", "sent"),
        ("provider_report", "sent", "delivered"),
    ]
    times = [e["at"] for e in delivered["events"]]
    assert times == sorted(times)
    (attempt,) = delivered["attempts"]
    assert attempt["accepted"] is True and attempt["n"] == 1
    assert attempt["provider_message_id"] == delivered["delivery"]["provider_message_id"] is not None
    assert delivered["delivery"]["address"] == "+14•••••••02" and delivered["variant"]["to"] == "+14•••••••02"
    assert delivered["variant"]["content"]["text"] and GOOD not in str(delivered)
    assert delivered["failover"] == {
        "of": None,
        "by": [],
        "chain": [
            {
                "delivery_id": good["delivery_id"],
                "channel": "sms",
                "address": "+14•••••••02",
                "state": "delivered",
                "failover_of": None,
            }
        ],
    }
    assert delivered["sends"] == 1 and delivered["possible_duplicate"] is False

    refused = _story(api, viewer, failed["delivery_id"])
    assert _path(refused) == [
        ("planned", None, "pending"),
        ("claim", "pending", "sending"),
        ("attempt", "sending", "failed"),
    ]
    assert refused["events"][-1]["code"] == "21211"
    (attempt,) = refused["attempts"]
    assert attempt["accepted"] is False and attempt["code"] == "21211" and attempt["message"]
    assert refused["failover"]["of"] is None and refused["failover"]["by"] == [failover["delivery_id"]]
    assert refused["sends"] == 0  # the provider said it took nothing

    replaced = _story(api, viewer, failover["delivery_id"])
    assert _path(replaced) == [
        ("failover", None, "pending"),
        ("claim", "pending", "sending"),
        ("attempt", "sending", "sent"),
        ("provider_report", "sent", "delivered"),
    ]
    assert replaced["failover"]["of"] == failed["delivery_id"] and replaced["failover"]["by"] == []
    chain = [(c["delivery_id"], c["channel"], c["address"]) for c in replaced["failover"]["chain"]]
    assert chain == [
        (failed["delivery_id"], "sms", "+14•••••••01"),
        (failover["delivery_id"], "email", "o•••@e•••.com"),
    ]
    assert replaced["failover"]["chain"] == refused["failover"]["chain"]
    assert "oncall@example.com" not in str(replaced).lower() and BAD not in str(replaced)
    assert replaced["variant"]["channel"] == "email" and replaced["variant"]["content"]["subject"]
