"""The subscribers' front door through the real app on SQLite and PostgreSQL, with real Redis:
unsubscribe pages, sign-up validation and neutrality, confirmation, manage, SMS keywords, limits,
the suppression list's admin calls. (Sending through a worker and the sandbox: test_front_door_e2e.)"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from channels.sandbox.inbound import inbound_params
from channels.sandbox.signing import twilio_signature
from config import Settings
from dispatcher.app import create_app
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.store.db import Database
from dispatcher.store.models import BroadcastVariant, Delivery, Signup, Subscriber, Suppression
from dispatcher.store.subscribers import upsert
from tests.api.conftest import PUBLIC_URL, auth, count, doors, purge_queues


@pytest.fixture
def front(settings: Settings, keys: dict[str, str]) -> Iterator[TestClient]:
    """The app with limits no test here reaches by accident (each run of Redis is shared)."""
    roomy = settings.model_copy(
        update={
            "public_posts_per_hour": 10_000,
            "public_views_per_hour": 10_000,
            "confirmations_per_address_per_day": 10_000,  # the run's Redis is shared by both backends
            "service_name": "Acme Status",
        }
    )
    with TestClient(create_app(roomy)) as test_client:
        yield test_client
    purge_queues(settings)


def _subscriber(db: Database, settings: Settings, **fields: Any) -> Subscriber:
    with db.session() as session:
        row, _ = upsert(
            session, settings, SubscriberIn(**{"external_id": "ann", "email": "ann@example.com", **fields})
        )
        session.expunge(row)
        return row


def _opt_outs(db: Database, external_id: str = "ann") -> list[str]:
    with db.session() as session:
        return list(session.scalar(select(Subscriber.opt_outs).where(Subscriber.external_id == external_id)))


def test_a_get_of_the_unsubscribe_link_changes_nothing_and_shows_a_button_that_posts(
    front: TestClient, db: Database, settings: Settings
) -> None:
    sub = _subscriber(db, settings)
    response = front.get("/unsubscribe", params={"token": sub.unsubscribe_token})
    assert response.status_code == 200
    assert '<form method="post"' in response.text and "List-Unsubscribe" in response.text
    assert "a***@example.com" in response.text and "ann@example.com" not in response.text
    assert "Acme Status" in response.text
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert _opt_outs(db) == []


def test_one_click_post_opts_out_of_email_and_a_forged_token_changes_nothing(
    front: TestClient, db: Database, settings: Settings
) -> None:
    sub = _subscriber(db, settings, phone="+14155550123")
    forged = front.post(
        "/unsubscribe",
        params={"token": sub.unsubscribe_token[:-2] + "xx"},
        data={"List-Unsubscribe": "One-Click"},
    )
    assert forged.status_code == 404 and "Nothing was changed" in forged.text
    no_body = front.post("/unsubscribe", params={"token": sub.unsubscribe_token})
    assert no_body.status_code == 400
    assert _opt_outs(db) == []
    response = front.post(
        "/unsubscribe",
        params={"token": sub.unsubscribe_token},
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and "unsubscribed" in response.text
    assert _opt_outs(db) == ["email"]  # SMS untouched


def _confirmation_token(db: Database, address: str) -> str:
    """The link in the confirmation the engine is about to send (read from its rendered variant)."""
    with db.session() as session:
        broadcast_id = session.scalar(
            select(Delivery.broadcast_id).where(Delivery.address == address).order_by(Delivery.id.desc())
        )
        variant = session.get(BroadcastVariant, (broadcast_id, "email", "en"))
        assert variant is not None
        match = re.search(r"/subscribe/confirm\?token=([\w-]+)", variant.variant["text"])
        assert match
        return match.group(1)


def test_sign_up_is_neutral_validated_and_confirmed_by_a_post(front: TestClient, db: Database) -> None:
    page = front.get("/subscribe")
    assert page.status_code == 200 and 'name="csrf_token"' in page.text
    bad = front.post("/subscribe", json={"email": "not-an-address"})
    assert bad.status_code == 422 and bad.json()["error"]["fields"] == ["email"]
    bad_phone = front.post("/subscribe", json={"phone": "+1 555"})
    assert bad_phone.status_code == 422 and bad_phone.json()["error"]["fields"] == ["phone"]
    assert count(db, Signup) == 0
    first = front.post("/subscribe", json={"email": "New@Example.com", "components": ["Checkout"]})
    assert first.status_code == 202
    token = _confirmation_token(db, "new@example.com")
    again = front.post("/subscribe", json={"email": "new@example.com", "components": ["Billing"]})
    assert again.status_code == 202 and again.json() == first.json()
    assert count(db, Subscriber) == 0  # nobody unconfirmed is a subscriber, so none can be sent to
    with db.session() as session:
        hashes = list(session.scalars(select(Signup.token_hash)))
    assert token not in hashes  # only the token's hash is kept
    shown = front.get("/subscribe/confirm", params={"token": token})
    assert shown.status_code == 200 and 'name="token"' in shown.text
    assert count(db, Subscriber) == 0  # a GET confirms nothing
    done = front.post("/subscribe/confirm", data={"token": token})
    assert done.status_code == 200 and "/manage?token=" in done.text
    twice = front.post("/subscribe/confirm", data={"token": token})
    assert twice.status_code == 404
    with db.session() as session:
        subs = list(session.scalars(select(Subscriber)))
        assert [(s.email, s.components, [lst.name for lst in s.lists]) for s in subs] == [
            ("new@example.com", ["Checkout"], ["customers"])
        ]
    second = _confirmation_token(db, "new@example.com")
    front.post("/subscribe/confirm", data={"token": second})
    assert count(db, Subscriber) == 1  # the second sign-up updates the same subscriber


def test_the_form_needs_its_csrf_token_and_names_the_bad_field(front: TestClient, db: Database) -> None:
    forged = front.post("/subscribe", data={"email": "a@example.com", "csrf_token": "guess"})
    assert forged.status_code == 403
    page = front.get("/subscribe")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    bad = front.post("/subscribe", data={"email": "nope", "csrf_token": csrf.group(1)})
    assert bad.status_code == 422 and "email: not a valid email address" in bad.text
    assert 'aria-invalid="true"' in bad.text
    good = front.post(
        "/subscribe", data={"email": "b@example.com", "channels": "email", "csrf_token": csrf.group(1)}
    )
    assert good.status_code == 202 and "confirmation is on its way" in good.text
    assert count(db, Signup) == 1


def test_the_manage_page_changes_channels_and_components_by_post_only(
    front: TestClient, db: Database, settings: Settings
) -> None:
    sub = _subscriber(db, settings, phone="+14155550123", components=["API"])
    page = front.get("/manage", params={"token": sub.unsubscribe_token})
    assert page.status_code == 200 and 'value="API"' in page.text
    assert front.get("/manage", params={"token": "forged"}).status_code == 404
    saved = front.post(
        "/manage",
        data={
            "token": sub.unsubscribe_token,
            "channels": "sms",
            "components": "Checkout, API",
            "action": "save",
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    with db.session() as session:
        row = session.scalar(select(Subscriber).where(Subscriber.external_id == "ann"))
        assert row is not None and row.opt_outs == ["email"] and row.components == ["Checkout", "API"]
    assert front.post("/manage", data={"token": "forged", "action": "leave"}).status_code == 404
    front.post("/manage", data={"token": sub.unsubscribe_token, "action": "leave"})
    assert sorted(_opt_outs(db)) == ["email", "sms"]


def _inbound(client: TestClient, sender: str, body: str, *, sign: bool = True) -> Any:
    path = "/v1/webhooks/twilio/inbound"
    params = inbound_params(sender, body)
    token = os.environ["DISPATCHER_SANDBOX_SECRET"]  # the sandbox account's auth token, as conftest sets
    headers = {"X-Twilio-Signature": twilio_signature(token, PUBLIC_URL + path, params)}
    return client.post(path, data=params, headers=headers if sign else {})


@pytest.fixture(params=["api", "callbacks"])
def inbound_door(request: pytest.FixtureRequest, front: TestClient) -> Iterator[TestClient]:
    """Where Twilio posts inbound SMS: the API, or the providers' door alone (as `up` serves them)."""
    yield from doors(request.param, front)


def test_sms_keywords_through_signed_inbound_webhooks(
    front: TestClient, inbound_door: TestClient, db: Database, settings: Settings
) -> None:
    phone = "+14155550199"
    _subscriber(db, settings, external_id="sam", email=None, phone=phone)
    assert _inbound(inbound_door, phone, "STOP", sign=False).status_code == 403
    assert _opt_outs(db, "sam") == []
    stop = _inbound(inbound_door, phone, " stop ")
    assert stop.status_code == 200 and "<Message>" in stop.text and "START" in stop.text
    assert _opt_outs(db, "sam") == ["sms"]
    with db.session() as session:
        assert session.scalar(select(Suppression.reason).where(Suppression.address == phone)) == "opted_out"
    help_ = _inbound(inbound_door, phone, "Help")
    assert "Acme Status" in help_.text and "STOP" in help_.text
    _inbound(inbound_door, phone, "UNSTOP")
    assert _opt_outs(db, "sam") == []
    assert count(db, Suppression) == 0
    newcomer = "+14155550177"
    assert front.post("/subscribe", json={"phone": newcomer}).status_code == 202
    assert count(db, Subscriber) == 1
    yes = _inbound(inbound_door, newcomer, "yes")
    assert "subscribed" in yes.text
    with db.session() as session:
        assert session.scalar(select(Subscriber.phone).where(Subscriber.phone == newcomer)) == newcomer


def test_sixty_sign_ups_from_one_address_meet_a_429(settings: Settings, db: Database) -> None:
    """The default limit, in a Redis prefix of this test's own."""
    mine = settings.model_copy(update={"redis_prefix": f"{settings.redis_prefix}rl-{uuid.uuid4().hex[:6]}:"})
    with TestClient(create_app(mine)) as client:
        answers = [
            client.post("/subscribe", json={"email": f"person{i}@office.example.com"}).status_code
            for i in range(60)
        ]
        last = client.post("/subscribe", json={"email": "late@office.example.com"})
    assert answers[:10] == [202] * 10  # an office signs up ten people
    assert 429 in answers
    assert last.status_code == 429 and int(last.headers["retry-after"]) > 0
    purge_queues(mine)


def test_suppressions_are_listed_filtered_and_removed_by_admins_only(
    front: TestClient, db: Database, keys: dict[str, str]
) -> None:
    from dispatcher.engine import suppressions

    with db.session() as session:
        suppressions.record(session, "email", "Gone@Example.com", "bounce", "550 no such user")
        suppressions.record(session, "sms", "+14155550100", "invalid_number")
    assert front.get("/v1/suppressions", headers=auth(keys["viewer"])).status_code == 403
    listed = front.get("/v1/suppressions", params={"channel": "email"}, headers=auth(keys["admin"])).json()
    assert [(s["address"], s["reason"]) for s in listed["suppressions"]] == [("gone@example.com", "bounce")]
    entry = listed["suppressions"][0]["id"]
    assert front.delete(f"/v1/suppressions/{entry}", headers=auth(keys["viewer"])).status_code == 403
    assert front.delete(f"/v1/suppressions/{entry}", headers=auth(keys["admin"])).status_code == 204
    assert front.delete(f"/v1/suppressions/{entry}", headers=auth(keys["admin"])).status_code == 404
    assert count(db, Suppression) == 1


def test_an_admin_rotates_the_link_token_and_the_old_links_stop_working(
    front: TestClient, db: Database, settings: Settings, keys: dict[str, str]
) -> None:
    sub = _subscriber(db, settings)
    rotated = front.post("/v1/subscribers/ann/token", headers=auth(keys["admin"]))
    assert rotated.status_code == 200 and sub.unsubscribe_token not in rotated.text
    assert front.get("/manage", params={"token": sub.unsubscribe_token}).status_code == 404
    one_click = front.post(
        "/unsubscribe", params={"token": sub.unsubscribe_token}, data={"List-Unsubscribe": "One-Click"}
    )
    assert one_click.status_code == 404 and _opt_outs(db) == []


def test_one_click_also_withdraws_the_subscribers_deliveries_that_have_not_left(
    front: TestClient, db: Database, settings: Settings
) -> None:
    from dispatcher.domain.message import OutageMessage
    from dispatcher.engine.planner import run_broadcast
    from dispatcher.incidents.broadcasts import open_incident

    ann = _subscriber(db, settings, lists=["admins"])
    _subscriber(db, settings, external_id="bob", email="bob@example.com", lists=["admins"])
    message = OutageMessage(
        title="Checkout is failing", impact="major", status_page_url="https://s.example.com"
    )
    with db.session() as session:
        _, broadcast = open_incident(session, settings, message, channels=["email"])
        broadcast_id = broadcast.id
    run_broadcast(db, settings, broadcast_id)  # planned and queued; no worker takes it here
    front.post(
        "/unsubscribe", params={"token": ann.unsubscribe_token}, data={"List-Unsubscribe": "One-Click"}
    )
    with db.session() as session:
        rows = dict(
            session.execute(
                select(Delivery.address, Delivery.state).where(Delivery.broadcast_id == broadcast_id)
            ).all()
        )
        error = session.scalar(select(Delivery.last_error).where(Delivery.address == "ann@example.com"))
    assert rows == {"ann@example.com": "suppressed", "bob@example.com": "pending"}
    assert error == "suppressed: unsubscribed"


def test_an_expired_sign_up_confirms_nothing(front: TestClient, db: Database) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    front.post("/subscribe", json={"email": "late@example.com"})
    token = _confirmation_token(db, "late@example.com")
    with db.session() as session:  # as if the expiry time had passed
        session.execute(update(Signup).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert front.get("/subscribe/confirm", params={"token": token}).status_code == 404
    assert front.post("/subscribe/confirm", data={"token": token}).status_code == 404
    assert count(db, Subscriber) == 0


def test_hostile_tokens_and_components_are_refused_before_any_query(front: TestClient, db: Database) -> None:
    for token in ("\x00" * 20, "a" * 500, "short", "../../etc/passwd-0123456789"):
        assert front.get("/unsubscribe", params={"token": token}).status_code == 404
        assert front.get("/manage", params={"token": token}).status_code == 404
        assert front.post("/subscribe/confirm", data={"token": token}).status_code == 404
    bad = front.post("/subscribe", json={"email": "a@example.com", "components": ["API\x00"]})
    assert bad.status_code == 422 and bad.json()["error"]["fields"] == ["components"]
    no_phone = front.post("/subscribe", json={"email": "a@example.com", "channels": ["sms"]})
    assert no_phone.status_code == 422 and no_phone.json()["error"]["fields"] == ["channels"]
    unknown = front.post("/subscribe", json={"email": "a@example.com", "admin": True})
    assert unknown.status_code == 422 and unknown.json()["error"]["fields"] == ["admin"]
    assert count(db, Signup) == 0


def test_a_webhook_receiver_failing_long_enough_is_suppressed_and_a_success_resets_the_clock(
    db: Database, settings: Settings
) -> None:
    from channels.base import Failure, Outcome
    from dispatcher.engine import suppressions
    from dispatcher.engine.transitions import Moved

    mine = settings.model_copy(
        update={
            "redis_prefix": f"{settings.redis_prefix}wh-{uuid.uuid4().hex[:6]}:",
            "webhook_suppress_after_s": 0.001,
        }
    )
    hook = "https://hooks.example.com/a"
    row = Moved(1, 1, 2, "webhook", hook, "en", None, 1, 1)
    failed = [Outcome.failed(1, Failure.PERMANENT, code="404", error="HTTP 404 Not Found")]
    ok = [Outcome.ok(1, None)]
    with db.session() as session:
        assert suppressions.from_outcomes(session, mine, [row], failed) == 0  # the clock starts
        suppressions.from_outcomes(session, mine, [row], ok)  # a success stops it
        assert suppressions.from_outcomes(session, mine, [row], failed) == 0  # and it starts again
    deadline = time.monotonic() + 10
    added = 0
    while not added and time.monotonic() < deadline:  # wait out the (one millisecond) window
        with db.session() as session:
            added = suppressions.from_outcomes(session, mine, [row], failed)
    assert added == 1
    with db.session() as session:
        assert (
            session.scalar(select(Suppression.reason).where(Suppression.address == hook)) == "webhook_failing"
        )


def test_behind_a_proxy_of_ours_the_limit_counts_each_client_not_the_proxy(
    settings: Settings, db: Database
) -> None:
    mine = settings.model_copy(
        update={
            "redis_prefix": f"{settings.redis_prefix}px-{uuid.uuid4().hex[:6]}:",
            "trusted_proxy_hops": 1,
            "public_posts_per_hour": 2,
        }
    )
    with TestClient(create_app(mine)) as client:

        def sign_up(forwarded_for: str) -> int:
            headers = {"X-Forwarded-For": forwarded_for}
            return client.post("/subscribe", json={"email": "p@example.com"}, headers=headers).status_code

        assert [sign_up("203.0.113.7") for _ in range(3)] == [202, 202, 429]
        assert sign_up("198.51.100.9") == 202  # another client behind the same proxy
        assert sign_up("1.2.3.4, 203.0.113.7") == 429  # a forged left-most entry changes nothing
    purge_queues(mine)


def test_one_address_gets_at_most_its_daily_confirmations_and_the_answer_never_changes(
    settings: Settings, db: Database
) -> None:
    mine = settings.model_copy(
        update={
            "redis_prefix": f"{settings.redis_prefix}cf-{uuid.uuid4().hex[:6]}:",
            "public_posts_per_hour": 10_000,
        }
    )
    with TestClient(create_app(mine)) as client:
        answers = [client.post("/subscribe", json={"email": "target@example.com"}) for _ in range(5)]
    assert {a.status_code for a in answers} == {202} and len({a.text for a in answers}) == 1
    with db.session() as session:
        sent = list(session.scalars(select(Delivery.id).where(Delivery.address == "target@example.com")))
    assert len(sent) == mine.confirmations_per_address_per_day == 3
    purge_queues(mine)
