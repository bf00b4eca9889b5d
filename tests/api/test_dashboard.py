"""The dashboard without a browser (the real app on the real `db`, SQLite and PostgreSQL): sign-in
and its cookie's flags, the session in Redis and its end, CSRF on every POST, roles, the strict
Content-Security-Policy, filters named when wrong, and the admin's audited reveal."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from config import Settings
from dispatcher.app import create_app
from dispatcher.auth import find_key, revoke_key
from dispatcher.dashboard import session as sessions
from dispatcher.dashboard.broadcasts import PAGE_SIZE
from dispatcher.dashboard.charts import chart_svg, legend
from dispatcher.dashboard.rendering import CSP
from dispatcher.store.db import Database
from dispatcher.store.models import AuditEntry, Delivery
from tests.api.conftest import MESSAGE, auth, purge_queues

EXPECTED_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@pytest.fixture
def dash(settings: Settings, keys: dict[str, str]) -> Iterator[TestClient]:
    """A browser-like client on https (the settings' public URL is https, so cookies are Secure).
    Sign-ins are not limited here: every test signs in from the same address in the same hour."""
    roomy = settings.model_copy(update={"dashboard_sign_ins_per_hour": 100_000})
    with TestClient(create_app(roomy), base_url="https://testserver", follow_redirects=False) as client:
        yield client
    purge_queues(settings)


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: TestClient, key: str) -> str:
    """Signs in through the form; returns the session's CSRF token (from the page after)."""
    form = client.get("/dashboard")
    response = client.post("/dashboard/sign-in", data={"csrf_token": csrf(form.text), "key": key})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard/incidents"
    return csrf(client.get("/dashboard/incidents").text)


def test_sign_in_sets_a_strict_session_cookie_kept_in_redis(
    dash: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    form = dash.get("/dashboard")
    assert form.status_code == 200
    assert form.headers["content-security-policy"] == EXPECTED_CSP == CSP
    assert form.headers["x-frame-options"] == "DENY" and form.headers["cache-control"] == "no-store"
    assert '<label for="key">' in form.text and 'id="key" name="key" type="password"' in form.text
    assert "<script>" not in form.text and "style=" not in form.text  # nothing inline for the CSP

    response = dash.post("/dashboard/sign-in", data={"csrf_token": csrf(form.text), "key": keys["viewer"]})
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("od_dash="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/dashboard", "secure"} <= flags
    assert keys["viewer"] not in cookie and keys["viewer"] not in response.headers["location"]

    token = cookie.split(";")[0].split("=", 1)[1]
    client = redis.Redis.from_url(settings.redis_url or "")
    name = f"{settings.redis_prefix}od:dash:session:{hashlib.sha256(token.encode()).hexdigest()}"
    stored = client.get(name)
    assert stored is not None and keys["viewer"].encode() not in stored and token.encode() not in stored
    assert 0 < client.ttl(name) <= settings.dashboard_session_ttl_s

    page = dash.get("/dashboard/incidents")
    assert page.status_code == 200 and "Signed in: od_" in page.text and "(viewer)" in page.text
    assert dash.get("/dashboard").headers["location"] == "/dashboard/incidents"


def test_no_secure_flag_when_the_dashboard_is_served_over_http(
    db: Database, keys: dict[str, str], settings: Settings
) -> None:
    plain = settings.model_copy(update={"public_url": "http://127.0.0.1:8000"})
    with TestClient(create_app(plain), follow_redirects=False) as client:
        form = client.get("/dashboard")
        response = client.post(
            "/dashboard/sign-in", data={"csrf_token": csrf(form.text), "key": keys["admin"]}
        )
        cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("od_dash="))
        assert "secure" not in cookie.lower() and "httponly" in cookie.lower()
        assert client.get("/dashboard/audit").status_code == 200


def test_a_wrong_key_shows_an_error_and_no_data(dash: TestClient, keys: dict[str, str]) -> None:
    form = dash.get("/dashboard")
    response = dash.post("/dashboard/sign-in", data={"csrf_token": csrf(form.text), "key": "od_wrong" * 5})
    assert response.status_code == 401
    assert "not valid" in response.text and 'role="alert"' in response.text
    assert not any(c.startswith("od_dash=") for c in response.headers.get_list("set-cookie"))
    assert "Incidents" not in response.text and "Sign out" not in response.text
    assert dash.get("/dashboard/incidents").headers["location"] == "/dashboard"


def test_pages_and_the_stream_need_a_session(dash: TestClient) -> None:
    for path in (
        "/dashboard/incidents",
        "/dashboard/incidents/1",
        "/dashboard/broadcasts/1",
        "/dashboard/audit",
    ):
        response = dash.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/dashboard", path
    assert dash.get("/dashboard/broadcasts/1/events").status_code == 401
    assert dash.get("/dashboard/deliveries/1").status_code == 303


def test_every_post_needs_its_csrf_token(dash: TestClient, keys: dict[str, str], db: Database) -> None:
    dash.get("/dashboard")
    assert dash.post("/dashboard/sign-in", data={"key": keys["viewer"]}).status_code == 403
    token = sign_in(dash, keys["admin"])
    assert dash.post("/dashboard/sign-out", data={}).status_code == 403
    assert dash.post("/dashboard/sign-out", data={"csrf_token": "not-it"}).status_code == 403
    assert dash.get("/dashboard/incidents").status_code == 200  # still signed in
    delivery_id = _broadcast_with_deliveries(dash, keys, db)[1]
    assert dash.post(f"/dashboard/deliveries/{delivery_id}/reveal", data={}).status_code == 403
    with db.session() as session:
        assert (
            session.scalar(select(AuditEntry.id).where(AuditEntry.action == "delivery.reveal_address"))
            is None
        )

    out = dash.post("/dashboard/sign-out", data={"csrf_token": token})
    assert out.status_code == 303 and out.headers["location"] == "/dashboard"
    assert dash.get("/dashboard/incidents").status_code == 303


def test_a_session_dies_with_its_key(dash: TestClient, keys: dict[str, str], db: Database) -> None:
    sign_in(dash, keys["viewer"])
    assert dash.get("/dashboard/incidents").status_code == 200
    with db.session() as session:
        revoke_key(session, find_key(session, keys["viewer"]).id)  # type: ignore[union-attr]
    assert dash.get("/dashboard/incidents").status_code == 303


def test_the_audit_log_is_for_admins(dash: TestClient, keys: dict[str, str]) -> None:
    sign_in(dash, keys["viewer"])
    refused = dash.get("/dashboard/audit")
    assert refused.status_code == 403 and "Admins only" in refused.text
    assert "Audit log" not in dash.get("/dashboard/incidents").text


def test_sign_in_attempts_are_limited_per_client(
    db: Database, keys: dict[str, str], settings: Settings
) -> None:
    strict = settings.model_copy(update={"dashboard_sign_ins_per_hour": 2, "trusted_proxy_hops": 1})
    me, other = {"X-Forwarded-For": secrets.token_hex(8)}, {"X-Forwarded-For": secrets.token_hex(8)}
    with TestClient(create_app(strict), base_url="https://testserver", follow_redirects=False) as client:
        form = client.get("/dashboard")
        data = {"csrf_token": csrf(form.text), "key": "wrong"}
        codes = [client.post("/dashboard/sign-in", data=data, headers=me).status_code for _ in range(3)]
        assert codes == [401, 401, 429]
        late = client.post("/dashboard/sign-in", data={**data, "key": keys["admin"]}, headers=me)
        assert late.status_code == 429 and "Retry-After" in late.headers
        elsewhere = client.post("/dashboard/sign-in", data={**data, "key": keys["admin"]}, headers=other)
        assert elsewhere.status_code == 303  # the limit is per client address


def _broadcast_with_deliveries(client: TestClient, keys: dict[str, str], db: Database) -> tuple[int, int]:
    """A broadcast (through the API) with one failed SMS and one sent email row; returns the
    broadcast's id and the failed row's."""
    created = client.post(
        "/v1/incidents", json={**MESSAGE, "channels": ["email", "sms"]}, headers=auth(keys["commander"])
    )
    assert created.status_code == 201, created.text
    broadcast_id = created.json()["broadcast"]["id"]
    with db.session() as session:
        failed = Delivery(
            broadcast_id=broadcast_id,
            tier=0,
            channel="sms",
            address="+14155550123",
            state="failed",
            attempts=1,
            last_error_code="21211",
            last_error="Invalid 'To' number: +14155550123",  # Twilio's 21211 quotes the number
        )
        sent = Delivery(
            broadcast_id=broadcast_id, tier=0, channel="email", address="ann@example.com", state="sent"
        )
        session.add_all([failed, sent])
        session.flush()
        return broadcast_id, failed.id


def test_the_broadcast_page_filters_receipts_from_the_url(
    dash: TestClient, keys: dict[str, str], db: Database
) -> None:
    broadcast_id, failed_id = _broadcast_with_deliveries(dash, keys, db)
    sign_in(dash, keys["viewer"])
    page = dash.get(f"/dashboard/broadcasts/{broadcast_id}?state=failed&channel=&tier=&q=")
    assert page.status_code == 200 and page.headers["content-security-policy"] == EXPECTED_CSP
    assert f'href="/dashboard/deliveries/{failed_id}"' in page.text
    assert "21211 Invalid &#39;To&#39; number: +14•••••••23" in page.text  # escaped and masked
    assert "+14155550123" not in page.text and "ann@example.com" not in page.text  # masked
    assert page.text.count('<tr class="state-') == 1
    assert f'data-stream="/dashboard/broadcasts/{broadcast_id}/events"' in page.text
    assert '<svg class="chart"' in page.text

    wrong = dash.get(f"/dashboard/broadcasts/{broadcast_id}?state=lost")
    assert wrong.status_code == 422 and "state:" in wrong.text
    assert dash.get(f"/dashboard/broadcasts/{broadcast_id}?tier=x").status_code == 422
    assert dash.get(f"/dashboard/broadcasts/{broadcast_id}?cursor=zzz").status_code == 422
    assert dash.get("/dashboard/broadcasts/999999").status_code == 404


def test_an_admin_reveals_an_address_and_the_reveal_is_audited(
    dash: TestClient, keys: dict[str, str], db: Database
) -> None:
    _, failed_id = _broadcast_with_deliveries(dash, keys, db)
    sign_in(dash, keys["viewer"])
    story = dash.get(f"/dashboard/deliveries/{failed_id}")
    assert story.status_code == 200 and "+14155550123" not in story.text and "Reveal" not in story.text
    dash.cookies.clear()

    token = sign_in(dash, keys["admin"])
    story = dash.get(f"/dashboard/deliveries/{failed_id}")
    assert "+14155550123" not in story.text and "Reveal the address" in story.text
    revealed = dash.post(f"/dashboard/deliveries/{failed_id}/reveal", data={"csrf_token": token})
    assert revealed.status_code == 200 and "+14155550123" in revealed.text
    with db.session() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "delivery.reveal_address")
        ).one()
        assert entry.target == f"delivery {failed_id}" and entry.role == "admin" and entry.request_id
        assert entry.actor == keys["admin"][:8] and entry.status == 200
    audit = dash.get("/dashboard/audit")
    assert audit.status_code == 200 and "delivery.reveal_address" in audit.text


def test_the_static_files_are_ours_and_nothing_else_is_served(dash: TestClient) -> None:
    css = dash.get("/dashboard/static/dashboard.css")
    js = dash.get("/dashboard/static/dashboard.js")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "EventSource" in js.text and "localStorage" not in js.text
    for name in ("base.html.j2", "..%2Fpages%2Fsite.css", "x.js"):
        assert dash.get(f"/dashboard/static/{name}").status_code == 404


def test_the_live_stream_sends_the_rendered_section_and_ends_with_the_session(
    settings: Settings, keys: dict[str, str], db: Database
) -> None:
    fast = settings.model_copy(update={"sse_heartbeat_s": 0.3, "dashboard_sign_ins_per_hour": 100_000})
    lines: list[str] = []
    with TestClient(create_app(fast), base_url="https://testserver", follow_redirects=False) as client:
        broadcast_id = _broadcast_with_deliveries(client, keys, db)[0]  # no worker: it stays queued
        sign_in(client, keys["viewer"])
        token = client.cookies["od_dash"]

        def read() -> None:
            with client.stream("GET", f"/dashboard/broadcasts/{broadcast_id}/events") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    lines.append(line)
                    if line.startswith("event: progress"):
                        sessions.sign_out(fast, token)  # as a sign-out in another tab would

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert not reader.is_alive(), f"the stream outlived its session: {lines}"
    assert any(line.startswith('data: <section id="live"') for line in lines), lines
    assert "event: signed-out" in lines
    assert not any("<script" in line for line in lines)


def test_the_incidents_and_an_incidents_timeline_link_their_broadcasts(
    dash: TestClient, keys: dict[str, str], db: Database
) -> None:
    broadcast_id = _broadcast_with_deliveries(dash, keys, db)[0]
    sign_in(dash, keys["viewer"])
    listing = dash.get("/dashboard/incidents")
    found = re.search(r'href="/dashboard/incidents/(\d+)">Checkout is failing<', listing.text)
    assert listing.status_code == 200 and found, listing.text
    assert "Checkout is failing" in dash.get("/dashboard/incidents?status=investigating").text
    assert "Checkout is failing" not in dash.get("/dashboard/incidents?status=resolved").text
    wrong = dash.get("/dashboard/incidents?status=gone")
    assert wrong.status_code == 422 and "status" in wrong.text

    timeline = dash.get(f"/dashboard/incidents/{found.group(1)}")
    assert timeline.status_code == 200 and "incident_opened" in timeline.text
    assert (
        f'href="/dashboard/broadcasts/{broadcast_id}">Broadcast #{broadcast_id}</a> (queued)' in timeline.text
    )
    assert dash.get("/dashboard/incidents/999999").status_code == 404


def test_receipts_page_on_with_next_keeping_the_filters(
    dash: TestClient, keys: dict[str, str], db: Database
) -> None:
    broadcast_id = _broadcast_with_deliveries(dash, keys, db)[0]
    with db.session() as session:
        session.add_all(
            Delivery(
                broadcast_id=broadcast_id, tier=0, channel="email", address=f"p{i}@example.com", state="sent"
            )
            for i in range(PAGE_SIZE + 5)
        )
    sign_in(dash, keys["viewer"])
    first = dash.get(f"/dashboard/broadcasts/{broadcast_id}?state=sent&channel=email")
    assert first.text.count('<tr class="state-sent">') == PAGE_SIZE
    found = re.search(r'<a rel="next" href="([^"]+)">Next</a>', first.text)
    assert found and "state=sent" in found.group(1) and "channel=email" in found.group(1)
    second = dash.get(found.group(1).replace("&amp;", "&"))
    assert second.text.count('<tr class="state-sent">') == 6  # the 55 new rows and the first one
    assert 'rel="next"' not in second.text
    first_ids = set(re.findall(r'href="/dashboard/deliveries/(\d+)"', first.text))
    second_ids = set(re.findall(r'href="/dashboard/deliveries/(\d+)"', second.text))
    assert first_ids and second_ids and not first_ids & second_ids


def test_the_chart_is_drawn_from_the_series_and_escapes_what_it_shows() -> None:
    over_time = {
        "bucket_s": 1,
        "series": {
            "sms": [["2026-12-02T14:00:00+00:00", 2], ["2026-12-02T14:00:01+00:00", 4]],
            "<email>": [["2026-12-02T14:00:00+00:00", 0], ["2026-12-02T14:00:01+00:00", 1]],
        },
    }
    svg = str(chart_svg(over_time))
    assert svg.count("<polyline") == 2 and "<email>" not in svg and "&lt;email&gt;" in svg
    assert ">4</text>" in svg  # the tallest bucket labels the y axis
    assert "sms 6" in svg  # the accessible label totals each channel
    assert legend(over_time) == [(0, "<email>", 1), (1, "sms", 6)]
    empty = str(chart_svg({"series": {}}))
    assert "<polyline" not in empty and "none yet" in empty


def test_a_commander_retries_failed_deliveries_once_however_often_it_is_clicked(
    dash: TestClient, keys: dict[str, str], db: Database
) -> None:
    broadcast_id, failed_id = _broadcast_with_deliveries(dash, keys, db)
    sign_in(dash, keys["viewer"])
    page = dash.get(f"/dashboard/broadcasts/{broadcast_id}")
    assert "Retry the failed deliveries" not in page.text
    assert (
        dash.post(
            f"/dashboard/broadcasts/{broadcast_id}/retry-failed", data={"csrf_token": csrf(page.text)}
        ).status_code
        == 403
    )
    dash.cookies.clear()

    token = sign_in(dash, keys["commander"])
    page = dash.get(f"/dashboard/broadcasts/{broadcast_id}")
    assert "Retry the failed deliveries" in page.text
    assert dash.post(f"/dashboard/broadcasts/{broadcast_id}/retry-failed", data={}).status_code == 403
    first = dash.post(f"/dashboard/broadcasts/{broadcast_id}/retry-failed", data={"csrf_token": token})
    second = dash.post(f"/dashboard/broadcasts/{broadcast_id}/retry-failed", data={"csrf_token": token})
    assert first.status_code == second.status_code == 303
    assert first.headers["location"].endswith("?retried=1") and second.headers["location"].endswith(
        "?retried=0"
    )
    assert "1 failed delivery queued to be sent again" in dash.get(first.headers["location"]).text
    with db.session() as session:
        assert session.get(Delivery, failed_id).state == "pending"  # type: ignore[union-attr]
        actions = list(
            session.scalars(select(AuditEntry.action).where(AuditEntry.actor == keys["commander"][:8]))
        )
    assert actions.count("broadcast.retry_failed") == 2  # both clicks audited; one row queued

    story = dash.get(f"/dashboard/deliveries/{failed_id}")
    assert "Resend this delivery" in story.text
    refused = dash.post(f"/dashboard/deliveries/{failed_id}/resend", data={"csrf_token": token})
    assert refused.status_code == 409 and "being sent already" in refused.text  # it is pending now
    with db.session() as session:
        sent_id = session.scalar(select(Delivery.id).where(Delivery.address == "ann@example.com"))
    resent = dash.post(f"/dashboard/deliveries/{sent_id}/resend", data={"csrf_token": token})
    assert (
        resent.status_code == 303
        and resent.headers["location"] == f"/dashboard/deliveries/{sent_id}?resent=1"
    )
    assert "Queued to be sent again" in dash.get(resent.headers["location"]).text
    with db.session() as session:
        row = session.get(Delivery, sent_id)
        assert row is not None and row.state == "pending" and row.resends == 1
        assert session.scalar(select(AuditEntry.target).where(AuditEntry.action == "delivery.resend")) == (
            f"delivery {sent_id}"
        )


def test_an_incidents_timeline_says_which_updates_were_silent_or_internal(
    dash: TestClient, keys: dict[str, str]
) -> None:
    commander = {"Authorization": f"Bearer {keys['commander']}"}
    created = dash.post("/v1/incidents", json={**MESSAGE, "notify": False}, headers=commander)
    assert created.status_code == 201, created.text
    incident_id = created.json()["incident"]["id"]
    internal = dash.post(
        f"/v1/incidents/{incident_id}/updates",
        json={"summary": "Internal: <vendor> bug", "public": False, "tiers": [0, 1]},
        headers=commander,
    )
    assert internal.status_code == 201, internal.text
    sign_in(dash, keys["viewer"])
    page = dash.get(f"/dashboard/incidents/{incident_id}")
    assert page.status_code == 200
    assert page.text.count("Not sent (notify: false)") == 1
    assert "<strong>internal</strong> (tiers 0, 1), never on the status page" in page.text
    assert "Internal: &lt;vendor&gt; bug" in page.text  # escaped, as all user text
    broadcast_id = internal.json()["broadcast"]["id"]
    assert f'href="/dashboard/broadcasts/{broadcast_id}"' in page.text
