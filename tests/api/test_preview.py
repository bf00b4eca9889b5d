"""Preview renders every channel and counts the audience as planning would, writing nothing."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from channels.base import ChannelName
from config import Settings
from dispatcher.app import create_app
from dispatcher.domain.message import EventKind
from dispatcher.store.db import Database
from dispatcher.store.models import Base, Broadcast
from tests.api.conftest import MESSAGE, auth, purge_queues


def row_counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return {
            t.name: int(session.scalar(select(func.count()).select_from(t)) or 0)
            for t in Base.metadata.sorted_tables
        }


def test_variants_and_audience(client: TestClient, keys: dict[str, str], db: Database) -> None:
    admin = auth(keys["admin"])
    people = [
        ("a1", {"lists": ["admins"], "email": "a1@example.com", "phone": "+14155550101"}),
        ("both", {"lists": ["admins", "customers"], "email": "both@example.com"}),
        (
            "alias",
            {"lists": ["customers"], "email": "BOTH@example.com"},
        ),  # same address: counted once, tier 0
        (
            "c1",
            {
                "lists": ["customers"],
                "email": "c1@example.com",
                "opt_outs": ["email"],
                "phone": "+14155550102",
            },
        ),
        (
            "scoped",
            {"lists": ["customers"], "email": "s@example.com", "components": ["Search"]},
        ),  # out of scope
        ("org", {"lists": ["stakeholders"], "slack_channel": "C0ORG"}),
    ]
    for ext, body in people:
        assert client.put(f"/v1/subscribers/{ext}", json=body, headers=admin).status_code == 201
    before = row_counts(db)

    response = client.post("/v1/preview", json=MESSAGE, headers=auth(keys["commander"]))
    assert response.status_code == 200, response.text
    data = response.json()
    assert row_counts(db) == before
    variants = data["variants"]
    assert variants["email"]["subject"] and "<" in variants["email"]["html"] and variants["email"]["text"]
    assert variants["chat"]["blocks"] and variants["chat"]["text"]
    assert variants["sms"]["encoding"] in ("GSM-7", "UCS-2") and variants["sms"]["segments"] >= 1
    assert 0 < variants["social"]["weight"] <= 280
    by_tier = {t["tier"]: t["channels"] for t in data["audience"]["tiers"]}
    sending = set(data["channels"])
    expected = {
        0: {"email": 2, "sms": 1},
        1: {"chat": 1},
        2: {"sms": 1},
        3: {"social": 1},
    }
    for tier, channels in expected.items():
        assert by_tier[tier] == {c: n for c, n in channels.items() if c in sending}, (tier, data["audience"])


def test_a_broken_override_template_is_reported(db: Database, keys: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "default.txt.j2").write_text("{{ f.title }} {% if %}")
    settings = Settings(database_url=db.url, templates_override_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/preview", json=MESSAGE, headers=auth(keys["commander"]))
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "template_error" and "sms/default.txt.j2" in error["message"]


def test_preview_counts_the_channels_a_configured_policy_sends_on(
    db: Database, keys: dict[str, str], settings: Settings
) -> None:
    """With `channel_policy` set (SMS on no event, chat on maintenance only), the preview's channels
    and audience are the broadcast's: it once counted the default policy's."""
    configured = settings.model_copy(
        update={"channel_policy": {ChannelName.SMS: [], ChannelName.CHAT: [EventKind.MAINTENANCE_SCHEDULED]}}
    )
    admin = auth(keys["admin"])
    with TestClient(create_app(configured)) as client:
        body = {
            "lists": ["admins"],
            "email": "a1@example.com",
            "phone": "+14155550101",
            "slack_channel": "C0A",
        }
        assert client.put("/v1/subscribers/a1", json=body, headers=admin).status_code == 201
        preview = client.post("/v1/preview", json=MESSAGE, headers=auth(keys["commander"])).json()
        created = client.post("/v1/incidents", json=MESSAGE, headers=auth(keys["commander"]))
        assert created.status_code == 201, created.text
    purge_queues(configured)
    assert "sms" not in preview["channels"] and "chat" not in preview["channels"]
    with db.session() as session:
        broadcast = session.get(Broadcast, created.json()["broadcast"]["id"])
        assert broadcast is not None
        assert broadcast.policy["channels"] == preview["channels"]
    tier0 = next(t for t in preview["audience"]["tiers"] if t["tier"] == 0)
    assert set(tier0["channels"]) == {"email"} & set(preview["channels"])


def test_preview_renders_as_one_reader_and_counts_the_readers(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    admin = auth(keys["admin"])
    people = {
        "t1": {"locale": "ja", "timezone": "Asia/Tokyo"},
        "t2": {"locale": "ja", "timezone": "Asia/Tokyo"},
        "v1": {"locale": "de-AT", "timezone": "Europe/Vienna"},
        "x1": {"locale": "xx", "timezone": "UTC"},
    }
    for ext, extra in people.items():
        body = {"lists": ["customers"], "email": f"{ext}@example.com", **extra}
        assert client.put(f"/v1/subscribers/{ext}", json=body, headers=admin).status_code == 201
    message = {**MESSAGE, "translations": {"de": {"title": "Der Checkout schlägt fehl"}}}
    commander = auth(keys["commander"])

    response = client.post("/v1/preview?locale=de-AT&timezone=Europe/Vienna", json=message, headers=commander)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["rendered_for"] == {"locale": "de", "timezone": "Europe/Vienna"}
    assert "Der Checkout schlägt fehl" in data["variants"]["email"]["subject"]
    readers = data["audience"]["readers"]
    combos = {(c["locale"], c["timezone"]): c for c in readers["combinations"]}
    assert combos[("ja", "Asia/Tokyo")]["subscribers"] == 2
    assert combos[("ja", "Asia/Tokyo")]["reads"] == {"locale": "ja", "timezone": "Asia/Tokyo"}
    assert combos[("de-AT", "Europe/Vienna")]["reads"] == {"locale": "de", "timezone": "Europe/Vienna"}
    assert combos[("xx", "UTC")]["reads"] == {"locale": "en", "timezone": "UTC"}
    assert readers["variants_per_channel"] == 3

    english = client.post("/v1/preview", json=message, headers=commander).json()
    assert english["rendered_for"] == {"locale": "en", "timezone": "UTC"}
    assert "Der Checkout" not in english["variants"]["email"]["subject"]

    bad = client.post("/v1/preview?timezone=Mars/Olympus", json=message, headers=commander)
    assert bad.status_code == 422 and bad.json()["error"]["fields"] == ["timezone"]
    wrong = client.post(
        "/v1/preview", json={**MESSAGE, "translations": {"de": {"title": ""}}}, headers=commander
    )
    assert wrong.status_code == 422 and "translations.de.title" in wrong.json()["error"]["fields"]
