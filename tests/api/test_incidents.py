"""Incidents and broadcasts over HTTP: create, update, read, receipts; errors create nothing."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event, select

from dispatcher.store.db import Database, get_database
from dispatcher.store.models import Broadcast, BroadcastVariant, IdempotencyRecord, Incident, IncidentUpdate
from tests.api.conftest import MESSAGE, auth, count


def open_incident(client: TestClient, key: str, body: dict | None = None, **headers: str) -> dict:
    response = client.post("/v1/incidents", json=body or MESSAGE, headers={**auth(key), **headers})
    assert response.status_code == 201, response.text
    return response.json()


def test_open_update_and_read_the_timeline(client: TestClient, keys: dict[str, str]) -> None:
    created = open_incident(client, keys["commander"], {**MESSAGE, "channels": ["email", "sms"]})
    incident, broadcast = created["incident"], created["broadcast"]
    assert incident["status"] == "investigating" and incident["title"] == MESSAGE["title"]
    assert broadcast["state"] == "queued" and broadcast["channels"] == ["email", "sms"]

    update = client.post(
        f"/v1/incidents/{incident['id']}/updates",
        json={"status": "identified", "cause": "A bad deploy.", "eta": "2030-01-01T10:00:00+01:00"},
        headers=auth(keys["commander"]),
    )
    assert update.status_code == 201, update.text
    assert update.json()["incident"]["message"]["eta"] == "2030-01-01T09:00:00Z"

    timeline = client.get(f"/v1/incidents/{incident['id']}", headers=auth(keys["viewer"])).json()
    assert [u["status"] for u in timeline["updates"]] == ["investigating", "identified"]
    assert [u["event"] for u in timeline["updates"]] == ["incident_opened", "incident_updated"]
    assert timeline["updates"][0]["broadcast_id"] == broadcast["id"]
    assert timeline["updates"][1]["broadcast_id"] == update.json()["broadcast"]["id"]

    progress = client.get(f"/v1/broadcasts/{broadcast['id']}", headers=auth(keys["viewer"]))
    assert progress.status_code == 200 and progress.json()["id"] == broadcast["id"]
    receipts = client.get(f"/v1/broadcasts/{broadcast['id']}/receipts", headers=auth(keys["viewer"]))
    assert receipts.json() == {"broadcast_id": broadcast["id"], "receipts": [], "next_cursor": None}


def test_a_bad_transition_is_409_naming_both_states_and_writes_nothing(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    incident = open_incident(client, keys["commander"])["incident"]
    url = f"/v1/incidents/{incident['id']}/updates"
    assert client.post(url, json={"status": "resolved"}, headers=auth(keys["commander"])).status_code == 201
    before = (count(db, IncidentUpdate), count(db, Broadcast))

    response = client.post(url, json={"status": "investigating"}, headers=auth(keys["commander"]))
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "invalid_transition" and error["fields"] == ["status"]
    assert "'resolved'" in error["message"] and "'investigating'" in error["message"]
    assert (count(db, IncidentUpdate), count(db, Broadcast)) == before

    reopened = client.post(
        url, json={"status": "investigating", "reopen": True}, headers=auth(keys["commander"])
    )
    assert reopened.status_code == 201


def test_validation_errors_name_the_field_and_create_nothing(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    headers = auth(keys["commander"])
    cases = [
        (
            {**MESSAGE, "support_contacts": [{"label": "x", "email": "not-an-email"}]},
            "support_contacts.0.email",
        ),
        ({**MESSAGE, "severity": "high"}, "severity"),
        ({**MESSAGE, "eta": "2030-01-01T10:00:00"}, "eta"),  # naive: rejected, not guessed
        ({**MESSAGE, "title": ""}, "title"),
        ({**MESSAGE, "channels": ["pigeon"]}, "channels.0"),
    ]
    for body, field in cases:
        response = client.post("/v1/incidents", json=body, headers=headers)
        assert response.status_code == 422, (field, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error" and field in error["fields"], error
        assert field in error["message"]

    malformed = client.post(
        "/v1/incidents", content=b'{"title": "x",', headers={**headers, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "malformed_json"

    oversize = client.post("/v1/incidents", json={**MESSAGE, "details": "x" * 30_000}, headers=headers)
    assert oversize.status_code == 413 and oversize.json()["error"]["code"] == "body_too_large"
    assert (count(db, Incident), count(db, Broadcast)) == (0, 0)


def test_an_update_with_bad_fields_names_them_and_writes_nothing(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    incident = open_incident(client, keys["commander"])["incident"]
    url = f"/v1/incidents/{incident['id']}/updates"
    headers = auth(keys["commander"])
    before = (count(db, IncidentUpdate), count(db, Broadcast))
    for body, field in [
        ({"statuss": "identified"}, "statuss"),
        ({"support_contacts": [{"label": "x", "email": "nope"}]}, "support_contacts.0.email"),
        ({"status": "completed"}, ""),  # a maintenance status on an incident: the message says so
    ]:
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == 422, response.text
        assert not field or field in response.json()["error"]["fields"]
    missing = client.post("/v1/incidents/999999/updates", json={"summary": "x"}, headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert (count(db, IncidentUpdate), count(db, Broadcast)) == before


def test_a_replayed_create_returns_the_first_response_and_starts_one_broadcast(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    first = client.post(
        "/v1/incidents", json=MESSAGE, headers={**auth(keys["commander"]), "Idempotency-Key": "abc-1"}
    )
    reordered = dict(reversed(list(MESSAGE.items())))  # same body, other key order: same canonical JSON
    again = client.post(
        "/v1/incidents", json=reordered, headers={**auth(keys["commander"]), "Idempotency-Key": "abc-1"}
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert count(db, Broadcast) == 1 and count(db, IdempotencyRecord) == 1

    other = client.post(
        "/v1/incidents",
        json={**MESSAGE, "impact": "critical"},
        headers={**auth(keys["commander"]), "Idempotency-Key": "abc-1"},
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_mismatch"
    assert "different" in other.json()["error"]["message"]
    assert count(db, Broadcast) == 1

    incident_id = first.json()["incident"]["id"]
    url = f"/v1/incidents/{incident_id}/updates"
    headers = {**auth(keys["commander"]), "Idempotency-Key": "upd-1"}
    u1 = client.post(url, json={"status": "monitoring"}, headers=headers)
    u2 = client.post(url, json={"status": "monitoring"}, headers=headers)
    assert u1.status_code == u2.status_code == 201 and u1.json() == u2.json()
    assert count(db, Broadcast) == 2


def test_receipts_404_and_bad_cursor(client: TestClient, keys: dict[str, str]) -> None:
    headers = auth(keys["viewer"])
    assert client.get("/v1/broadcasts/424242", headers=headers).status_code == 404
    assert client.get("/v1/broadcasts/424242/receipts", headers=headers).status_code == 404
    broadcast = open_incident(client, keys["commander"])["broadcast"]
    bad = client.get(f"/v1/broadcasts/{broadcast['id']}/receipts?cursor=zzz", headers=headers)
    assert bad.status_code == 422 and bad.json()["error"]["fields"] == ["cursor"]
    too_many = client.get(f"/v1/broadcasts/{broadcast['id']}/receipts?limit=5000", headers=headers)
    assert too_many.status_code == 422 and too_many.json()["error"]["fields"] == ["limit"]


def test_an_incidents_variants_are_stored_in_one_statement(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    """The commander's request stores every channel's variant with one INSERT, not one per row: at
    the flood's peak each round trip to a loaded database costs the commander milliseconds."""
    inserts: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO BROADCAST_VARIANTS"):
            inserts.append(statement)

    engine = get_database(client.app.state.settings).engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        created = open_incident(client, keys["commander"], MESSAGE)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    with db.session() as session:
        stored = session.scalars(
            select(BroadcastVariant.channel).where(
                BroadcastVariant.broadcast_id == created["broadcast"]["id"]
            )
        ).all()
    assert len(inserts) == 1
    assert sorted(stored) == sorted(created["broadcast"]["channels"])  # one row per channel, all there


def test_the_answer_is_the_broadcast_as_read_back(client: TestClient, keys: dict[str, str]) -> None:
    """The 201's broadcast is built from the rows the request wrote, not read back: it must be what
    `GET /v1/broadcasts/{id}` then reads, for an opening, a public update and an internal one."""
    commander, viewer = auth(keys["commander"]), auth(keys["viewer"])
    opened = open_incident(client, keys["commander"], {**MESSAGE, "channels": ["email", "sms", "chat"]})
    url = f"/v1/incidents/{opened['incident']['id']}/updates"
    public = client.post(url, json={"status": "identified"}, headers=commander)
    note = {"cause": "A bad deploy.", "public": False, "tiers": [0]}
    internal = client.post(url, json=note, headers=commander)
    assert public.status_code == 201 and internal.status_code == 201, (public.text, internal.text)
    answers = [opened["broadcast"], public.json()["broadcast"], internal.json()["broadcast"]]
    assert len(answers[2]["tiers"]) == 1  # the internal one reaches tier 0 alone
    for answer in answers:
        read = client.get(f"/v1/broadcasts/{answer['id']}", headers=viewer)
        assert read.status_code == 200 and read.json() == answer


def test_opening_an_incident_reads_back_nothing_it_wrote(client: TestClient, keys: dict[str, str]) -> None:
    """At the flood's peak each round trip to a loaded database costs the commander milliseconds:
    the request reads the tier layout once, knows its first update is number 1, and neither asks
    which variants a broadcast it just created has nor reads the new broadcast's rows back."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    open_incident(client, keys["commander"])  # the first request's one-off work (key cache, tables)
    engine = get_database(client.app.state.settings).engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        open_incident(client, keys["commander"], {**MESSAGE, "title": "A second outage"})
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    reads = [s for s in statements if s.startswith("SELECT")]
    assert sum("FROM SUBSCRIBER_LISTS" in s for s in reads) == 1, reads
    assert not [s for s in reads if "MAX(INCIDENT_UPDATES.SEQ)" in s], reads
    # broadcasts, their tiers, gates, counts, sends and variants
    assert not [s for s in reads if "FROM BROADCAST" in s], reads
    assert len(statements) <= 14, statements  # 22 before
