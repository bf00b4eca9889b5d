"""The commander's terminal against the real thing: a uvicorn API process, a Celery worker and the
provider sandbox. Each command's human output carries the ids, counts, states and provider codes a
person needs; with `--json` it is the API's body as the API gives it; an error is one line on stderr
naming the field, and a non-zero exit."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from dispatcher.auth import Role, create_key
from dispatcher.cli import app as cli
from dispatcher.store.db import Database
from tests.harness import Harness

pytestmark = pytest.mark.slow

ADMINS = [(f"adm{i}", f"adm{i}@example.com", f"+1415555{i:04d}") for i in range(2)]
CUSTOMERS = [(f"cus{i}", f"customer{i}@example.com", f"+1415666{i:04d}") for i in range(4)]
INVALID = CUSTOMERS[1][2]  # the sandbox's Twilio refuses it: 21211
MESSAGE = """\
title: Checkout is failing
impact: major
summary: Card payments fail for some customers.
components: [payments]
"""


@pytest.fixture
def api(harness: Harness, tmp_path: Path) -> Iterator[str]:
    url, proc = harness.api(tmp_path / "api.log")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def keys(db: Database) -> dict[Role, str]:
    with db.session() as session:
        return {role: create_key(session, role) for role in Role}


def run(url: str, key: str, *args: str, code: int = 0, **env: str) -> Result:
    env = {"DISPATCHER_URL": url, "DISPATCHER_API_KEY": key, **env}
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def api_get(url: str, key: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url}{path}", params=params, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_commander_runs_an_incident_from_the_terminal(
    api: str, harness: Harness, keys: dict[Role, str], tmp_path: Path
) -> None:
    admin, commander, viewer = keys[Role.ADMIN], keys[Role.COMMANDER], keys[Role.VIEWER]
    rows = ["external_id,lists,email,phone"]
    rows += [f"{ext},admins,{email},{phone}" for ext, email, phone in ADMINS]
    rows += [f"{ext},customers,{email},{phone}" for ext, email, phone in CUSTOMERS]
    rows += ["bad1,customers,not-an-email,"]
    csv_file = tmp_path / "subscribers.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    imported = run(api, admin, "subscribers", "import", str(csv_file)).stdout
    assert imported.splitlines()[0] == "Imported 6 subscribers; 1 row rejected."
    assert re.search(r"^  row 7: email: ", imported, re.M)
    again = json.loads(run(api, admin, "subscribers", "import", str(csv_file), "--json").stdout)
    assert again["imported"] == 6 and again["rejected"] == 1 and again["errors"][0]["field"] == "email"

    message = tmp_path / "incident.yaml"
    message.write_text(MESSAGE)
    preview = run(api, commander, "preview", str(message)).stdout
    previewed = json.loads(run(api, commander, "--json", "preview", str(message)).stdout)
    assert set(previewed) == {"event", "channels", "message", "rendered_for", "variants", "audience"}
    german = json.loads(run(api, commander, "--json", "preview", str(message), "--locale", "de-AT").stdout)
    assert german["rendered_for"] == {"locale": "de", "timezone": "UTC"}
    total = previewed["audience"]["total"]
    assert f"nothing sent: {total:,} deliveries" in preview
    assert "Checkout is failing" in preview

    harness.sandbox.set_faults("twilio", invalid_numbers=[INVALID])
    harness.worker()
    opened = run(
        api, commander, "incident", "open", str(message), "--channel", "email", "--channel", "sms",
        "--plan-wait", "60",
    ).stdout  # fmt: skip
    lines = opened.splitlines()
    incident = re.fullmatch(r"Incident #(\d+) opened \(major, payments\): Checkout is failing", lines[0])
    broadcast = re.fullmatch(r"Broadcast #(\d+): 12 deliveries on email, sms; tier 0 first\.", lines[1])
    assert incident and broadcast, lines
    incident_id, broadcast_id = int(incident.group(1)), int(broadcast.group(1))
    assert lines[2] == f"Watch: outage-dispatcher broadcast watch {broadcast_id}"

    watched = run(api, viewer, "broadcast", "watch", str(broadcast_id)).stdout
    assert "\x1b" not in watched  # not a terminal: plain lines
    done = rf"^Broadcast #{broadcast_id} completed: 12 deliveries, 11 accepted \(\d+ delivered\), 1 failed\.$"
    assert re.search(done, watched, re.M), watched
    assert re.search(r"^  sms +5 accepted \(\d+ delivered\), 1 failed$", watched, re.M), watched
    assert re.search(r"^  email +6 accepted \(\d+ delivered\), 0 failed$", watched, re.M), watched
    assert re.search(r"^  tier 2 sms +4/4 ", watched, re.M)  # the customers' tier, line by line
    # on a terminal (rich's TTY_COMPATIBLE says this one is): drawn bars, then the same summary
    drawn = run(api, viewer, "broadcast", "watch", str(broadcast_id), TTY_COMPATIBLE="1").stdout
    assert "\x1b[" in drawn and "━" in drawn and "4/4" in drawn
    assert re.search(done, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn), re.M), drawn
    events = [
        json.loads(line)
        for line in run(api, viewer, "broadcast", "watch", str(broadcast_id), "--json").stdout.splitlines()
    ]
    assert events[-1]["state"] == "completed" and events[-1]["id"] == broadcast_id

    failed = run(api, viewer, "receipts", str(broadcast_id), "--state", "failed").stdout
    assert "Broadcast #" in failed and "1 receipt" in failed
    assert "21211" in failed and "Invalid 'To' Phone Number" in failed and "cus1" in failed
    assert INVALID not in failed
    body = api_get(api, viewer, f"/v1/broadcasts/{broadcast_id}/receipts", state="failed")
    (row,) = body["receipts"]
    assert re.search(rf"^\S*\s*{row['delivery_id']}\s.*\bfailed\b", failed, re.M)
    as_json = run(api, viewer, "--json", "receipts", str(broadcast_id), "--state", "failed").stdout
    assert json.loads(as_json) == body
    everything = api_get(api, viewer, f"/v1/broadcasts/{broadcast_id}/receipts", limit=1000)
    paged = run(api, viewer, "receipts", str(broadcast_id), "--page-size", "5", "--limit", "100", "--json")
    assert json.loads(paged.stdout) == everything  # three pages, followed
    first = json.loads(run(api, viewer, "receipts", str(broadcast_id), "--limit", "5", "--json").stdout)
    assert [r["delivery_id"] for r in first["receipts"]] == [
        r["delivery_id"] for r in everything["receipts"][:5]
    ]
    assert first["next_cursor"] is not None
    shown = run(api, viewer, "receipts", str(broadcast_id), "--limit", "5", "--channel", "sms").stdout
    assert "more rows" in shown and "5 receipts" in shown

    updated = run(api, commander, "incident", "update", str(incident_id), "--status", "resolved").stdout
    assert (
        updated.splitlines()[0]
        == f"Incident #{incident_id} updated: resolved (major, payments): Checkout is failing"
    )
    assert re.match(r"Broadcast #\d+: ", updated.splitlines()[1])
    reopened = json.loads(
        run(
            api,
            commander,
            "incident",
            "update",
            str(incident_id),
            "--reopen",
            "--status",
            "investigating",
            "--json",
        ).stdout
    )
    assert (
        reopened["incident"]["status"] == "investigating"
        and reopened["broadcast"]["incident_id"] == incident_id
    )

    incidents = run(api, viewer, "incidents", "list").stdout
    assert re.search(rf"^\S*\s*{incident_id}\s.*\binvestigating\b.*Checkout is failing", incidents, re.M), (
        incidents
    )
    assert json.loads(run(api, viewer, "incidents", "list", "--json").stdout) == api_get(
        api, viewer, "/v1/incidents"
    )
    listed_broadcasts = json.loads(
        run(api, viewer, "--json", "broadcasts", "list", "--incident", str(incident_id)).stdout
    )
    direct_broadcasts = api_get(api, viewer, "/v1/broadcasts", incident_id=incident_id)
    assert [b["id"] for b in listed_broadcasts["broadcasts"]] == [
        b["id"] for b in direct_broadcasts["broadcasts"]
    ]
    assert (
        len(listed_broadcasts["broadcasts"]) == 3
        and listed_broadcasts["broadcasts"][-1]["id"] == broadcast_id
    )
    table = run(api, viewer, "broadcasts", "list", "--incident", str(incident_id)).stdout
    assert "3 broadcasts" in table
    assert re.search(
        rf"^\S*\s*{broadcast_id}\s+\S\s+{incident_id}\s.*\bcompleted\b\s+\S\s+12\s", table, re.M
    ), table

    found = run(api, viewer, "receipts", str(broadcast_id), "--q", "cus1").stdout
    assert "2 receipts" in found and found.count("cus1") == 2 and "cus0" not in found
    # a viewer sees masked addresses, in the provider's message too
    assert "customer1@example.com" not in found and INVALID not in found and found.count("•••") >= 2

    starts = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    scheduled = run(
        api, commander, "maintenance", "schedule", "--title", "Database upgrade", "--impact", "minor",
        "--starts-at", starts.isoformat(), "--ends-at", (starts + timedelta(hours=1)).isoformat(),
    ).stdout  # fmt: skip
    head = re.match(r"Maintenance #(\d+) scheduled \[scheduled\]: Database upgrade", scheduled)
    assert head, scheduled
    listed = json.loads(run(api, viewer, "maintenance", "list", "--json").stdout)
    direct = api_get(api, viewer, "/v1/maintenances")
    assert set(listed) == set(direct) and [m["id"] for m in listed["items"]] == [int(head.group(1))]
    assert [m["title"] for m in direct["items"]] == [m["title"] for m in listed["items"]]


def test_errors_are_one_line_on_stderr_naming_the_field(api: str, keys: dict[Role, str]) -> None:
    commander, viewer = keys[Role.COMMANDER], keys[Role.VIEWER]
    bad = run(api, commander, "incident", "open", "--title", "x", "--impact", "huge", code=1)
    assert bad.stdout == "" and len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("error: ") and "impact: " in bad.stderr
    assert bad.stderr.rstrip().endswith("(validation_error, HTTP 422)")
    as_json = run(api, commander, "--json", "incident", "open", "--title", "x", "--impact", "huge", code=1)
    assert "impact" in json.loads(as_json.stdout)["error"]["fields"]
    missing = run(api, viewer, "receipts", "999999", code=1)
    assert missing.stderr.strip() == "error: broadcast 999999 not found [broadcast_id] (not_found, HTTP 404)"
    assert run(api, viewer, "broadcast", "watch", "999999", code=1).stderr.startswith(
        "error: broadcast 999999"
    )
    wrong = run(api, "od_not-a-key-" + "x" * 30, "receipts", "1", code=1)
    assert "(unauthorized, HTTP 401)" in wrong.stderr
    forbidden = run(api, viewer, "incident", "open", "--title", "x", code=1)
    assert "(forbidden, HTTP 403)" in forbidden.stderr
    cursor = run(api, viewer, "receipts", "1", "--state", "nope", code=1)
    assert cursor.stderr.startswith("error: state: ") and len(cursor.stderr.splitlines()) == 1


def test_command_line_mistakes_are_one_line_too(tmp_path: Path) -> None:
    """Caught before any request: no server needed."""
    env = {"DISPATCHER_URL": "http://127.0.0.1:9"}
    no_key = CliRunner().invoke(cli, ["receipts", "1"], env=env)
    assert no_key.exit_code == 2 and no_key.stderr == (
        "error: --api-key: no API key: set DISPATCHER_API_KEY or pass --api-key\n"
    )
    missing = CliRunner().invoke(
        cli, ["preview", str(tmp_path / "nope.yaml")], env={**env, "DISPATCHER_API_KEY": "k"}
    )
    assert (
        missing.exit_code == 2
        and missing.stderr.startswith("error: FILE: ")
        and len(missing.stderr.splitlines()) == 1
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("title: [unclosed\n")
    bad = CliRunner().invoke(cli, ["incident", "open", str(broken)], env={**env, "DISPATCHER_API_KEY": "k"})
    assert (
        bad.exit_code == 2
        and bad.stderr.startswith(f"error: FILE: {broken}: ")
        and len(bad.stderr.splitlines()) == 1
    )
