"""Subscribers over HTTP: put, get, list, delete, and JSON/CSV imports with per-row errors."""

from __future__ import annotations

from fastapi.testclient import TestClient

from dispatcher.store.db import Database
from dispatcher.store.models import Subscriber
from tests.api.conftest import auth, count

CSV = (
    "external_id,name,org,lists,email,phone,slack_channel,webhook_url,channels,components,regions,"
    "opt_outs,locale,timezone\n"
    "c1,Ann,Acme,admins;customers,ann@example.com,+14155550101,,,sms;email,API,,,en,Europe/Berlin\n"
    "c2,Bob,,customers,bob@example.com,,,,,,,,,\n"
    "c3,Bad,,customers,not-an-email,+1234,,,,,,,,\n"
)


def test_put_get_list_delete(client: TestClient, keys: dict[str, str]) -> None:
    headers = auth(keys["admin"])
    body = {"lists": ["admins"], "email": "Oncall@Example.com", "phone": "+14155550100", "channels": ["sms"]}
    created = client.put("/v1/subscribers/oncall", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["email"] == "oncall@example.com" and created.json()["lists"] == ["admins"]
    replaced = client.put("/v1/subscribers/oncall", json={**body, "name": "On call"}, headers=headers)
    assert replaced.status_code == 200 and replaced.json()["name"] == "On call"
    assert client.get("/v1/subscribers/oncall", headers=headers).json()["phone"] == "+14155550100"

    for i in range(3):
        client.put(f"/v1/subscribers/s{i}", json={"email": f"s{i}@example.com"}, headers=headers)
    page = client.get("/v1/subscribers?limit=2", headers=headers).json()
    rest = client.get(f"/v1/subscribers?limit=2&cursor={page['next_cursor']}", headers=headers).json()
    ids = [s["external_id"] for s in page["subscribers"] + rest["subscribers"]]
    assert ids == ["oncall", "s0", "s1", "s2"] and rest["next_cursor"] is None

    assert client.delete("/v1/subscribers/oncall", headers=headers).status_code == 204
    assert client.get("/v1/subscribers/oncall", headers=headers).status_code == 404
    assert client.delete("/v1/subscribers/oncall", headers=headers).status_code == 404


def test_put_rejects_bad_phone_email_and_unknown_fields(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    headers = auth(keys["admin"])
    for body, field in [
        ({"phone": "+1234"}, "phone"),
        ({"email": "nope"}, "email"),
        ({"email": "a@example.com", "pager": "x"}, "pager"),
        ({"email": "a@example.com", "external_id": "other"}, "external_id"),
    ]:
        response = client.put("/v1/subscribers/x1", json=body, headers=headers)
        assert response.status_code == 422, response.text
        assert field in response.json()["error"]["fields"]
    assert count(db, Subscriber) == 0


def test_csv_import_reports_bad_rows_and_imports_the_good(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    headers = auth(keys["admin"])
    atomic = client.post(
        "/v1/subscribers/import?atomic=true", content=CSV, headers={**headers, "Content-Type": "text/csv"}
    )
    assert atomic.status_code == 422
    assert {(r["row"], r["field"]) for r in atomic.json()["error"]["rows"]} == {(3, "email"), (3, "phone")}
    assert count(db, Subscriber) == 0

    response = client.post(
        "/v1/subscribers/import", files={"file": ("subs.csv", CSV, "text/csv")}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["imported"] == 2 and response.json()["rejected"] == 1
    ann = client.get("/v1/subscribers/c1", headers=headers).json()
    assert ann["lists"] == ["admins", "customers"] and ann["channels"] == ["sms", "email"]
    assert ann["components"] == ["API"] and ann["timezone"] == "Europe/Berlin"


def test_a_csv_the_reader_cannot_read_is_refused_naming_the_file_and_the_line(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    """Found by the schema fuzz: a CSV the csv module refuses was a 500. The file is at fault, not a row."""
    broken = CSV.replace("Bob", "B\rb")  # a carriage return inside an unquoted cell
    response = client.post(
        "/v1/subscribers/import", content=broken, headers={**auth(keys["admin"]), "Content-Type": "text/csv"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["fields"] == ["file"] and "line 3" in error["message"], error
    assert count(db, Subscriber) == 0


def test_json_import_is_idempotent(client: TestClient, keys: dict[str, str], db: Database) -> None:
    headers = {**auth(keys["admin"]), "Idempotency-Key": "import-1"}
    body = {"subscribers": [{"external_id": f"j{i}", "email": f"j{i}@example.com"} for i in range(5)]}
    first = client.post("/v1/subscribers/import", json=body, headers=headers)
    again = client.post("/v1/subscribers/import", json=body, headers=headers)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert first.json() == {"imported": 5, "rejected": 0, "errors": []}
    assert count(db, Subscriber) == 5
    dup = client.post(
        "/v1/subscribers/import",
        json={"subscribers": [{"external_id": "d", "email": "d@example.com"}] * 2},
        headers=auth(keys["admin"]),
    )
    assert dup.json()["errors"] == [{"row": 2, "field": "external_id", "message": "repeats an earlier row"}]
    bad = client.post(
        "/v1/subscribers/import",
        content=b"{",
        headers={**auth(keys["admin"]), "Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "malformed_json"


def test_json_import_with_an_unknown_top_level_field_names_it_and_imports_nothing(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    """A caller who sends `{"list": "admins", "subscribers": [...]}` is told which field is wrong
    (lists belong to each subscriber), and nobody is imported."""
    body = {"list": "admins", "subscribers": [{"external_id": "x1", "email": "x1@example.com"}]}
    response = client.post("/v1/subscribers/import", json=body, headers=auth(keys["admin"]))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["fields"] == ["list"] and "list" in error["message"]
    assert count(db, Subscriber) == 0
