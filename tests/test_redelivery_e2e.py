"""A commander's retry and resend end to end: the API, a real Celery worker, Redis, the provider
sandbox, on SQLite and PostgreSQL. Each failed recipient gets exactly one more message however the
retry is clicked (twice with one Idempotency-Key, once without, all at once), an address on the
suppression list gets none, and a resend is one deliberate copy, not a possible duplicate."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dispatcher.app import create_app
from dispatcher.auth import Role, create_key
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.store.models import Delivery
from tests.harness import Harness

pytestmark = pytest.mark.slow


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def received(harness: Harness) -> Counter[tuple[str, str]]:
    """Messages the sandbox took per channel and recipient (not its own status callbacks)."""
    return Counter(
        (m["channel"], m["recipient"].lower())
        for m in harness.sandbox.messages()
        if m["channel"] in ("email", "sms")
    )


def receipts(client: TestClient, key: str, broadcast_id: int) -> dict[int, dict[str, Any]]:
    page = client.get(f"/v1/broadcasts/{broadcast_id}/receipts", headers={"Authorization": f"Bearer {key}"})
    return {r["delivery_id"]: r for r in page.json()["receipts"]}


def test_failed_deliveries_are_retried_once_and_a_resend_is_one_deliberate_copy(harness: Harness) -> None:
    # every email answered 503 until its attempts run out; one number refused for good (and suppressed)
    harness.configure(DISPATCHER_RETRY_MAX_ATTEMPTS="2", DISPATCHER_BREAKER_FAILURES="1000")
    harness.sandbox.set_faults("sendgrid", error_rate=1.0)
    harness.sandbox.set_faults("twilio", invalid_numbers=[phone(3)])
    harness.subscribers(
        [
            SubscriberIn(external_id=f"adm{i}", lists=["admins"], email=f"adm{i}@example.com", phone=phone(i))
            for i in range(4)
        ]
    )
    harness.worker()
    broadcast_id = harness.open(channels=["email", "sms"])
    first = harness.wait(broadcast_id)
    assert first["totals"]["failed"] == 5 and first["totals"]["sent"] == 3
    before = received(harness)
    assert not any(channel == "email" for channel, _ in before)

    harness.sandbox.set_faults("sendgrid")  # the provider is back
    with harness.database.session() as session:
        key = create_key(session, Role.COMMANDER)
        admin = create_key(session, Role.ADMIN)
    headers = {"Authorization": f"Bearer {key}"}
    path = f"/v1/broadcasts/{broadcast_id}/retry-failed"
    with TestClient(create_app(harness.settings)) as client:
        calls = [{**headers, "Idempotency-Key": "retry-once"}] * 2 + [headers]
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda h: client.post(path, headers=h), calls))
        assert [a.status_code for a in answers] == [200, 200, 200]
        keyed, _, bare = (a.json() for a in answers)
        assert answers[0].json() == answers[1].json()  # one ran, the other replayed it (or lost and replayed)
        assert keyed["queued"] + bare["queued"] == 4  # the four emails; the suppressed number stays failed
        done = harness.wait(broadcast_id)
        assert client.post(path, headers=headers).json()["queued"] == 0  # a later click: nothing failed

        after = received(harness)
        assert after - before == Counter({("email", f"adm{i}@example.com"): 1 for i in range(4)})
        assert done["totals"]["sent"] == 7 and done["totals"]["failed"] == 1
        assert all(t["outstanding"] == 0 for t in done["tiers"]) and done["extra_sends"] == 0

        with harness.database.session() as session:
            sms0 = session.scalar(
                select(Delivery.id).where(Delivery.broadcast_id == broadcast_id, Delivery.address == phone(0))
            )
        resent = client.post(f"/v1/deliveries/{sms0}/resend", headers=headers)
        assert resent.status_code == 200 and resent.json()["resends"] == 1
        again = harness.wait(broadcast_id)
        assert received(harness) - after == Counter({("sms", phone(0)): 1})
        row = receipts(client, admin, broadcast_id)[sms0]
        assert (row["sends"], row["resends"], row["possible_duplicate"]) == (2, 1, False)
        assert again["sends"] == done["sends"] + 1 and again["extra_sends"] == 0
        story = client.get(f"/v1/deliveries/{sms0}", headers={"Authorization": f"Bearer {admin}"}).json()
        assert (story["sends"], story["resends"], story["possible_duplicate"]) == (2, 1, False)
        moves = [(e["kind"], e["from"], e["to"]) for e in story["events"]]
        assert ("resend", "sent", "pending") in moves or ("resend", "delivered", "pending") in moves
        assert not any(r["possible_duplicate"] for r in receipts(client, admin, broadcast_id).values())
        entries = client.get("/v1/audit", headers={"Authorization": f"Bearer {admin}"}).json()["entries"]
        assert Counter(e["action"] for e in entries) == {"broadcast.retry_failed": 4, "delivery.resend": 1}


def test_a_permanent_refusal_fixed_at_the_provider_is_retried_once(harness: Harness) -> None:
    # Twilio refuses our From number (21606: final, but the account's fault, not the recipients')
    harness.sandbox.set_faults("twilio", senders=["+15005550999"])
    harness.subscribers(
        [SubscriberIn(external_id=f"c{i}", lists=["admins"], phone=phone(i)) for i in range(3)]
    )
    harness.worker()
    broadcast_id = harness.open(channels=["sms"])
    assert harness.wait(broadcast_id)["totals"]["failed"] == 3
    assert received(harness) == Counter()

    harness.sandbox.set_faults("twilio")  # the number is fixed on the account
    with harness.database.session() as session:
        key = create_key(session, Role.COMMANDER)
    with TestClient(create_app(harness.settings)) as client:
        path = f"/v1/broadcasts/{broadcast_id}/retry-failed"
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "fixed"}
        assert client.post(path, headers=headers).json()["queued"] == 3
        done = harness.wait(broadcast_id)
        replay = client.post(path, headers=headers)
        assert replay.json()["queued"] == 3 and replay.headers["Idempotent-Replay"] == "true"
    assert received(harness) == Counter({("sms", phone(i)): 1 for i in range(3)})
    assert done["totals"]["sent"] == 3 and done["totals"]["failed"] == 0 and done["extra_sends"] == 0
