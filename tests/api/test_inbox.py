"""A status report the API acknowledged is applied, even when the API is killed right after the 2xx:
the report waits in the Redis inbox, and the next API process claims it once the dead one's
heartbeat lapses (dispatcher/engine/inbox.py). A real uvicorn API, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from dispatcher.engine import inbox
from dispatcher.store.db import Database
from tests.api.test_webhooks import FORM, SECRET, add_delivery, row, twilio_params
from tests.conftest import free_port
from tests.harness import FAST, Harness, broadcast_row
from tests.processes import start_api

pytestmark = pytest.mark.slow


@contextmanager
def row_locked(db: Database, delivery_id: int) -> Iterator[None]:
    """Holds a lock the applier's UPDATE must wait for: the row itself on PostgreSQL, the
    database's write lock on SQLite. Released on leaving."""
    if db.is_sqlite:
        conn = sqlite3.connect(db.url.split("///", 1)[1], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with db.engine.connect() as conn, conn.begin() as transaction:
        conn.execute(text("SELECT id FROM deliveries WHERE id = :id FOR UPDATE"), {"id": delivery_id})
        yield
        transaction.rollback()


def applied(db: Database, delivery_id: int, timeout_s: float) -> tuple[str, str | None]:
    """The row once a report has moved it to `delivered`, or as it stands when time runs out."""
    deadline = time.monotonic() + timeout_s
    while row(db, delivery_id)[0] != "delivered" and time.monotonic() < deadline:
        time.sleep(0.1)
    return row(db, delivery_id)


def test_an_acknowledged_callback_survives_a_kill_of_the_api_right_after_the_2xx(
    harness: Harness, db: Database, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    harness.configure(DISPATCHER_PUBLIC_URL=url)
    env = {**os.environ, **FAST, **harness.env, "DATABASE_URL": db.url}
    settings = harness.settings
    with db.session() as session:
        broadcast_id = broadcast_row(session).id
    delivery_id = add_delivery(db, broadcast_id, "sms", "+14155550101", provider_message_id="SMkill")

    first = start_api(env, tmp_path / "api-1.log", port)
    path = f"/v1/webhooks/twilio?delivery_id={delivery_id}"
    params = twilio_params("SMkill")
    signature = RequestValidator(SECRET).compute_signature(url + path, params)
    try:
        with row_locked(db, delivery_id):  # the applier cannot apply it before the kill
            answer = httpx.post(
                url + path, content=urlencode(params), headers={**FORM, "X-Twilio-Signature": signature}
            )
            assert answer.status_code == 204
            assert inbox.waiting(settings) == 1  # acknowledged, kept, not yet applied
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        assert row(db, delivery_id) == ("sent", "SMkill")  # the process that took it is gone
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)

    second = start_api(env, tmp_path / "api-2.log", port)
    try:
        assert applied(db, delivery_id, 60) == ("delivered", "SMkill")
        assert inbox.wait_applied(settings, timeout_s=10)
    finally:
        second.terminate()
        second.wait(timeout=20)


def test_the_commanders_api_keeps_callbacks_and_leaves_applying_them_to_the_callbacks_api(
    harness: Harness, db: Database, tmp_path: Path
) -> None:
    """As `up` runs them: providers call `DISPATCHER_CALLBACK_URL`, served by the providers' door
    alone (`create_callbacks_app`), which applies what they report and serves nothing else; the
    commanders' API (`DISPATCHER_APPLY_CALLBACKS=false`) still keeps a signed callback that reaches
    it, but never applies it itself."""
    commanders_port, callbacks_port = free_port(), free_port()
    commanders, callbacks = (f"http://127.0.0.1:{p}" for p in (commanders_port, callbacks_port))
    harness.configure(DISPATCHER_PUBLIC_URL=commanders, DISPATCHER_CALLBACK_URL=callbacks)
    env = {**os.environ, **FAST, **harness.env, "DATABASE_URL": db.url}
    settings = harness.settings
    with db.session() as session:
        broadcast_id = broadcast_row(session).id
    delivery_id = add_delivery(db, broadcast_id, "sms", "+14155550101", provider_message_id="SMsplit")
    path = f"/v1/webhooks/twilio?delivery_id={delivery_id}"
    params = twilio_params("SMsplit")

    def post(base: str, signed_over: str) -> int:
        signature = RequestValidator(SECRET).compute_signature(signed_over + path, params)
        headers = {**FORM, "X-Twilio-Signature": signature}
        return httpx.post(base + path, content=urlencode(params), headers=headers).status_code

    api = start_api({**env, "DISPATCHER_APPLY_CALLBACKS": "false"}, tmp_path / "api.log", commanders_port)
    try:
        assert post(commanders, signed_over=commanders) == 403  # Twilio signs the URL it called
        assert post(commanders, signed_over=callbacks) == 204
        assert inbox.waiting(settings) == 1
        time.sleep(2 * inbox.ROUND_S + 1)  # an applier would have taken it by now
        assert inbox.waiting(settings) == 1
        assert row(db, delivery_id) == ("sent", "SMsplit")

        hooks = start_api(
            env, tmp_path / "callbacks.log", callbacks_port, "dispatcher.app:create_callbacks_app"
        )
        try:
            assert applied(db, delivery_id, 30) == ("delivered", "SMsplit")
            assert httpx.post(f"{callbacks}/v1/incidents", json={}).status_code == 404  # no people's routes
            assert inbox.wait_applied(settings, timeout_s=10)
            params["MessageStatus"] = "undelivered"  # a later report, sent where Twilio sends it
            assert post(callbacks, signed_over=callbacks) == 204
            assert inbox.wait_applied(settings, timeout_s=10)
        finally:
            hooks.terminate()
            hooks.wait(timeout=20)
    finally:
        api.terminate()
        api.wait(timeout=20)
