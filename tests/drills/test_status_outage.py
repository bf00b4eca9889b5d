"""The status routes stay up while everything else is down: the API as a real process (uvicorn),
its PostgreSQL and its Redis each behind a TCP forwarder that the test cuts. With both cut, the
status JSON, the page and the Atom feed still answer 200 from the process's copy, marked stale
with its age; /healthz is unaffected and /readyz says what is down. Restored, fresh again."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from config import Settings
from dispatcher.domain.message import OutageMessage
from dispatcher.incidents.broadcasts import open_incident
from dispatcher.store.db import Database
from dispatcher.store.models import SubscriberList
from dispatcher.supervisor import free_port
from tests.conftest import PG_UNAVAILABLE, PG_URL, PREFIX, REDIS_URL, migrated_database
from tests.drills.tcp_cut import TcpCut
from tests.processes import start_api

pytestmark = [pytest.mark.skipif(PG_UNAVAILABLE is not None, reason=str(PG_UNAVAILABLE))]
PATHS = ["/api/v2/summary.json", "/api/v2/status.json", "/api/v2/components.json", "/status", "/history.atom"]


@pytest.fixture
def pg() -> Iterator[Database]:
    with migrated_database("postgresql", "status_outage") as database:
        yield database


@pytest.fixture
def proxies() -> Iterator[tuple[TcpCut, TcpCut]]:
    pg_url, redis_url = make_url(PG_URL), httpx.URL(REDIS_URL)
    db_proxy = TcpCut(pg_url.host or "127.0.0.1", pg_url.port or 5432)
    redis_proxy = TcpCut(redis_url.host or "127.0.0.1", redis_url.port or 6379)
    yield db_proxy, redis_proxy
    db_proxy.close()
    redis_proxy.close()


def _until(what: str, check: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_status_json_answers_from_the_process_copy_with_the_database_and_redis_cut(
    pg: Database, proxies: tuple[TcpCut, TcpCut], tmp_root: Path
) -> None:
    db_proxy, redis_proxy = proxies
    settings = Settings(database_url=pg.url, service_name="Acme", public_components=["API", "Web"])
    with pg.session() as session:
        session.add(SubscriberList(name="customers", tier=1))
    with pg.session() as session:
        open_incident(
            session, settings, OutageMessage(title="API down", impact="critical", components=["API"])
        )

    redis_url = httpx.URL(REDIS_URL).copy_with(host="127.0.0.1", port=redis_proxy.port)
    env = {
        **os.environ,
        "DATABASE_URL": make_url(pg.url)
        .set(host="127.0.0.1", port=db_proxy.port)
        .render_as_string(hide_password=False),
        "REDIS_URL": str(redis_url),
        "DISPATCHER_REDIS_PREFIX": f"{PREFIX}statusdrill{os.getpid()}:",
        "DISPATCHER_SERVICE_NAME": "Acme",
        "DISPATCHER_PUBLIC_COMPONENTS": '["API", "Web"]',
    }
    port = free_port()
    api = start_api(env, tmp_root / "status-outage-api.log", port)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            before = {path: http.get(path) for path in PATHS}
            for response in before.values():
                assert response.status_code == 200 and "x-status-snapshot-stale" not in response.headers
            assert before["/api/v2/status.json"].json()["status"]["indicator"] == "critical"

            db_proxy.cut()
            redis_proxy.cut()
            _until(
                "a stale snapshot",
                lambda: http.get(PATHS[0]).headers.get("x-status-snapshot-stale") == "true",
            )
            for path in PATHS:
                during = http.get(path)
                assert during.status_code == 200, during.text
                assert during.headers["x-status-snapshot-stale"] == "true"
                assert int(during.headers["x-status-snapshot-age"]) >= 1
                if path.endswith(".json"):
                    assert during.json() == before[path].json()  # the last good copy, whole
                    assert during.headers["etag"] == before[path].headers["etag"]
            page = http.get("/status").text
            assert "API down" in page and "may be out of date" in page  # the page says how old it is
            assert "API down" in http.get("/history.atom").text
            assert (
                http.get(PATHS[0], headers={"If-None-Match": before[PATHS[0]].headers["etag"]}).status_code
                == 304
            )
            assert http.get("/healthz").status_code == 200
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unavailable")
            assert ready.json()["checks"]["broker"].startswith("unavailable")
            assert ready.json()["status_page"]["snapshot"] == "stale"

            db_proxy.restore()
            redis_proxy.restore()
            _until("a fresh snapshot", lambda: "x-status-snapshot-stale" not in http.get(PATHS[0]).headers)
            assert http.get("/readyz").status_code == 200
    finally:
        api.terminate()
        api.wait(timeout=20)
