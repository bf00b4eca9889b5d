"""The whole path through the HTTP API and CLI: a real uvicorn API process, a real Celery worker and
the provider sandbox, whose signed status callbacks come back to the API's webhooks."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from dispatcher.auth import Role, create_key, find_key
from dispatcher.cli import app as cli
from dispatcher.store.db import Database
from tests.harness import Harness

pytestmark = pytest.mark.slow

ADMINS = [(f"adm{i}", f"adm{i}@example.com", f"+1415555{i:04d}") for i in range(3)]
CUSTOMERS = [(f"cus{i}", f"customer{i}@example.com", f"+1415666{i:04d}") for i in range(12)]
MESSAGE_YAML = """\
title: Checkout is failing
impact: major
summary: Card payments fail for some customers.
next_update_at: 2030-01-01T10:00:00Z
status_page_url: https://status.example.com/incidents/1
support_contacts:
  - label: Support
    email: help@example.com
"""


class Api:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def api(harness: Harness, tmp_path: Path) -> Iterator[Api]:
    log = tmp_path / "api.log"
    url, proc = harness.api(log)
    yield Api(url, proc, log)
    proc.terminate()
    proc.wait(timeout=20)


def cli_run(api: Api, key: str, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"DISPATCHER_URL": api.url, "DISPATCHER_API_KEY": key})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def sse_events(url: str, key: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=60)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
    return events


def test_a_broadcast_through_the_api_and_cli(
    api: Api, harness: Harness, db: Database, tmp_path: Path
) -> None:
    with db.session() as session:
        keys = {role: create_key(session, role) for role in Role}
    rows = ["external_id,lists,email,phone"]
    rows += [f"{ext},admins,{email},{phone}" for ext, email, phone in ADMINS]
    rows += [f"{ext},customers,{email},{phone}" for ext, email, phone in CUSTOMERS]
    csv_file = tmp_path / "subscribers.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    imported = json.loads(cli_run(api, keys[Role.ADMIN], "subscribers", "import", str(csv_file), "--json"))
    assert imported["imported"] == len(ADMINS) + len(CUSTOMERS)

    worker = harness.worker()
    message = tmp_path / "incident.yaml"
    message.write_text(MESSAGE_YAML)
    opened = json.loads(
        cli_run(
            api,
            keys[Role.COMMANDER],
            "incident",
            "open",
            str(message),
            "--channel",
            "email",
            "--channel",
            "sms",
            "--json",
        )
    )
    broadcast_id = opened["broadcast"]["id"]

    events = sse_events(f"{api.url}/v1/broadcasts/{broadcast_id}/events", keys[Role.VIEWER])
    assert events[-1][0] == "completed" and events[-1][1]["state"] == "completed"
    assert all(name == "progress" for name, _ in events[:-1])
    people = len(ADMINS) + len(CUSTOMERS)
    assert events[-1][1]["totals"]["sent"] + events[-1][1]["totals"]["delivered"] == 2 * people

    # The sandbox reports delivery through the API's signed webhooks (SendGrid and Twilio).
    # Callbacks that beat the worker's recording are parked and applied right after it: wait for that.
    harness.sandbox.drain_callbacks(timeout_s=30)
    headers = {"Authorization": f"Bearer {keys[Role.VIEWER]}"}
    deadline = time.monotonic() + 60
    while True:
        receipts: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
            page = httpx.get(
                f"{api.url}/v1/broadcasts/{broadcast_id}/receipts", params=params, headers=headers
            ).json()
            receipts += page["receipts"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        if {r["state"] for r in receipts} == {"delivered"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(receipts) == 2 * people
    assert {r["state"] for r in receipts} == {"delivered"}, [r for r in receipts if r["state"] != "delivered"]
    assert {r["subscriber"] for r in receipts} == {ext for ext, _, _ in ADMINS + CUSTOMERS}
    assert all(r["provider_message_id"] and r["sent_at"] and r["delivered_at"] for r in receipts)
    admin_sms = httpx.get(
        f"{api.url}/v1/broadcasts/{broadcast_id}/receipts",
        params={"tier": 0, "channel": "sms"},
        headers=headers,
    ).json()["receipts"]
    assert len(admin_sms) == len(ADMINS)

    watched = cli_run(api, keys[Role.VIEWER], "broadcast", "watch", str(broadcast_id))
    assert f"Broadcast #{broadcast_id} completed: {2 * people} deliveries" in watched and "email" in watched

    updated = json.loads(
        cli_run(
            api,
            keys[Role.COMMANDER],
            "incident",
            "update",
            str(opened["incident"]["id"]),
            "--status",
            "resolved",
            "--json",
        )
    )
    assert updated["incident"]["status"] == "resolved"
    harness.wait(updated["broadcast"]["id"])

    metrics = httpx.get(f"{api.url}/metrics").text
    assert re.search(r'dispatcher_deliveries\{channel="sms",state="delivered"\} \d+', metrics)
    assert "dispatcher_broadcasts_created_total 2.0" in metrics
    # the workers' provider totals, read back from Redis by the API
    sms_recipients = re.search(
        r'dispatcher_provider_recipients_total\{provider="twilio"\} ([0-9.]+)', metrics
    )
    assert sms_recipients and float(sms_recipients.group(1)) >= len(ADMINS)
    assert re.search(r'dispatcher_provider_call_seconds_total\{provider="sendgrid"\} [0-9.e+-]+', metrics)
    assert 'dispatcher_provider_wait_seconds_total{provider="twilio"}' in metrics

    # Nobody's address leaks into the logs, and the API wrote one JSON line per request.
    worker.stop()
    api.proc.terminate()
    api.proc.wait(timeout=20)
    logs = api.output() + worker.output()
    for _, email, phone in ADMINS + CUSTOMERS:
        assert email not in logs and phone not in logs
    assert "help@example.com" not in logs
    request_lines = [json.loads(line) for line in api.output().splitlines() if line.startswith("{")]
    access = [line for line in request_lines if line.get("logger") == "dispatcher.access"]
    assert any(line["path"] == "/v1/incidents" and line["status"] == 201 for line in access)
    # the callbacks' successes are counted in /metrics, not logged one by one
    assert not any(line["path"].startswith("/v1/webhooks/") and line["status"] < 400 for line in access)
    with harness.database.session() as session:  # logs name a key by its id, never its characters
        commander_id = find_key(session, keys[Role.COMMANDER]).id  # type: ignore[union-attr]
    assert any(line.get("api_key") == commander_id for line in access)
    assert all(isinstance(line.get("api_key", 0), int | None) for line in access)
    assert not any(key in logs or key[:8] in logs for key in keys.values())
    # ...and the worker one line per provider answer, the address masked.
    calls = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    calls = [line for line in calls if line.get("delivery_id") is not None]
    assert {line["provider"] for line in calls} >= {"sendgrid", "twilio"}
    assert all(line["outcome"] and line["duration_ms"] >= 0 for line in calls)
    assert any("***@" in line["message"] for line in calls if line["channel"] == "email")
    assert any("******" in line["message"] for line in calls if line["channel"] == "sms")
