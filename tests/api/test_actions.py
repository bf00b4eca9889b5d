"""A commander's retry and resend and an admin's reveal, through the API without a worker: roles,
404/409, `Idempotency-Key`, what reaches the queue, and the audit entries. (With a real worker and
the sandbox: tests/test_redelivery_e2e.py.)"""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import redis
from fastapi.testclient import TestClient

from config import Settings
from dispatcher.domain.states import DeliveryState
from dispatcher.engine.broker import URGENT_QUEUE, queue_keys
from dispatcher.engine.suppressions import record
from dispatcher.store.db import Database
from dispatcher.store.models import Delivery
from tests.api.conftest import auth
from tests.test_redelivery_and_audit_store import _settled_broadcast


def queued_batches(settings: Settings) -> list[list[int]]:
    """The ids of every send_batch task waiting on the urgent queue (tier 0's), oldest first."""
    client = redis.Redis.from_url(settings.redis_url or "")
    found = []
    for key in queue_keys(URGENT_QUEUE, settings):
        for raw in reversed(client.lrange(key, 0, -1)):
            message = json.loads(raw)
            body = json.loads(base64.b64decode(message["body"]))
            found.append(body[0][2])
    return found


def test_retry_failed_queues_each_failed_row_once_and_honours_the_idempotency_key(
    client: TestClient, keys: dict[str, str], db: Database, settings: Settings
) -> None:
    states = [DeliveryState.FAILED, DeliveryState.DELIVERED, DeliveryState.FAILED]
    with db.session() as session:
        broadcast_id, ids = _settled_broadcast(session, states)
        other_id, other_ids = _settled_broadcast(session, [DeliveryState.FAILED])
    path = f"/v1/broadcasts/{broadcast_id}/retry-failed"
    for role in ("viewer", "admin"):
        assert client.post(path, headers=auth(keys[role])).status_code == 403
    missing = client.post(f"/v1/broadcasts/{other_id + 100}/retry-failed", headers=auth(keys["commander"]))
    assert missing.status_code == 404 and missing.json()["error"]["fields"] == ["broadcast_id"]
    with_key = {**auth(keys["commander"]), "Idempotency-Key": "retry-1"}
    first = client.post(path, headers=with_key)
    assert first.status_code == 200 and first.json() == {"broadcast_id": broadcast_id, "queued": 2}
    replay = client.post(path, headers=with_key)
    assert replay.json() == first.json() and replay.headers["Idempotent-Replay"] == "true"
    again = client.post(path, headers=auth(keys["commander"]))  # no key: nothing is failed any more
    assert again.json() == {"broadcast_id": broadcast_id, "queued": 0}
    assert queued_batches(settings) == [[ids[0], ids[2]]]
    long_key = {**auth(keys["commander"]), "Idempotency-Key": "k" * 201}
    refused = client.post(f"/v1/broadcasts/{other_id}/retry-failed", headers=long_key)
    assert refused.status_code == 422 and refused.json()["error"]["fields"] == ["Idempotency-Key"]
    with db.session() as session:  # an address on the suppression list stays failed
        record(session, "email", session.get(Delivery, other_ids[0]).address, "bounce")
    skipped = client.post(f"/v1/broadcasts/{other_id}/retry-failed", headers=auth(keys["commander"]))
    assert skipped.json()["queued"] == 0
    with db.session() as session:
        assert session.get(Delivery, other_ids[0]).state == "failed"


def test_resend_sends_one_copy_and_refuses_while_it_is_on_its_way(
    client: TestClient, keys: dict[str, str], db: Database, settings: Settings
) -> None:
    states = [DeliveryState.DELIVERED, DeliveryState.SENDING, DeliveryState.SUPPRESSED, DeliveryState.FAILED]
    with db.session() as session:
        _, ids = _settled_broadcast(session, states)
    assert client.post(f"/v1/deliveries/{ids[0]}/resend", headers=auth(keys["viewer"])).status_code == 403
    with_key = {**auth(keys["commander"]), "Idempotency-Key": "resend-1"}
    first = client.post(f"/v1/deliveries/{ids[0]}/resend", headers=with_key)
    assert first.status_code == 200, first.text
    assert first.json() == {"delivery_id": ids[0], "queued": True, "resends": 1}
    assert client.post(f"/v1/deliveries/{ids[0]}/resend", headers=with_key).json() == first.json()
    for delivery_id in ids[:3]:  # now pending; sending; suppressed
        answer = client.post(f"/v1/deliveries/{delivery_id}/resend", headers=auth(keys["commander"]))
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "conflict", delivery_id
    failed = client.post(f"/v1/deliveries/{ids[3]}/resend", headers=auth(keys["commander"]))
    assert failed.status_code == 200 and failed.json()["resends"] == 1
    missing = client.post(f"/v1/deliveries/{ids[3] + 100}/resend", headers=auth(keys["commander"]))
    assert missing.status_code == 404 and missing.json()["error"]["fields"] == ["delivery_id"]
    assert queued_batches(settings) == [[ids[0]], [ids[3]]]


def test_reveal_is_admin_only_and_audited_without_the_address(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    with db.session() as session:
        broadcast_id, ids = _settled_broadcast(session, [DeliveryState.FAILED])
    for role in ("viewer", "commander"):
        assert client.post(f"/v1/deliveries/{ids[0]}/reveal", headers=auth(keys[role])).status_code == 403
    shown = client.post(f"/v1/deliveries/{ids[0]}/reveal", headers=auth(keys["admin"]))
    assert shown.json() == {"delivery_id": ids[0], "channel": "email", "address": "p0@example.com"}
    assert client.post(f"/v1/deliveries/{ids[0] + 9}/reveal", headers=auth(keys["admin"])).status_code == 404
    client.post(f"/v1/broadcasts/{broadcast_id}/retry-failed", headers=auth(keys["commander"]))
    client.post(f"/v1/deliveries/{ids[0]}/resend", headers=auth(keys["commander"]))  # pending now: 409
    found = client.get("/v1/audit", headers=auth(keys["admin"])).json()["entries"]
    assert [(e["action"], e["target"], e["role"], e["status"]) for e in found] == [
        ("delivery.resend", f"delivery {ids[0]}", "commander", 409),
        ("broadcast.retry_failed", f"broadcast {broadcast_id}", "commander", 200),
        ("delivery.reveal_address", f"delivery {ids[0] + 9}", "admin", 404),
        ("delivery.reveal_address", f"delivery {ids[0]}", "admin", 200),
        ("delivery.reveal_address", f"delivery {ids[0]}", "commander", 403),
        ("delivery.reveal_address", f"delivery {ids[0]}", "viewer", 403),
    ]
    assert "p0@example.com" not in repr(found)


def test_concurrent_resends_send_one_copy(
    client: TestClient, keys: dict[str, str], db: Database, settings: Settings
) -> None:
    with db.session() as session:
        _, ids = _settled_broadcast(session, [DeliveryState.DELIVERED])
    path = f"/v1/deliveries/{ids[0]}/resend"
    plain = auth(keys["commander"])
    calls = [{**plain, "Idempotency-Key": "resend-race"}] * 2 + [plain] * 2
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(lambda h: client.post(path, headers=h), calls))
    assert sorted(a.status_code for a in answers) in ([200, 200, 409, 409], [200, 409, 409, 409])
    assert answers[0].status_code == answers[1].status_code  # one key: one outcome, run or replayed
    with db.session() as session:
        assert session.get(Delivery, ids[0]).resends == 1
    assert queued_batches(settings) == [[ids[0]]]
