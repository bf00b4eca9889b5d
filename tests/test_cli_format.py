"""What the CLI prints for people, from the API's bodies: pure, no server. The commands themselves
run against a real API, worker and sandbox in tests/api/test_cli_terminal.py."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from dispatcher.cli import format as fmt
from dispatcher.cli.client import error_line
from dispatcher.cli.watch import progress_view


def progress(state: str = "sending", planned_at: str | None = "2026-12-02T14:00:01+00:00") -> dict[str, Any]:
    return {
        "id": 31,
        "state": state,
        "channels": ["email", "sms", "chat"],
        "planned_at": planned_at,
        "totals": {"pending": 0, "sent": 99_000, "delivered": 1_000, "failed": 40, "bounced": 10},
        "extra_sends": 0,
        "tiers": [
            {
                "tier": 0,
                "state": "done",
                "planned": 50,
                "gate": "accepted",
                "channels": {"email": {"delivered": 25}, "sms": {"sent": 20, "failed": 5}},
            },
            {
                "tier": 2,
                "state": "sending",
                "planned": 100_000,
                "gate": None,
                "channels": {
                    "email": {"sent": 60_000, "delivered": 975, "bounced": 10, "pending": 4_015},
                    "sms": {"sent": 18_980, "failed": 35, "sending": 16_000},
                    "chat": {"sent": 20},
                },
            },
        ],
    }


def test_a_planned_broadcast_is_counted_with_thousands_separators() -> None:
    line = fmt.broadcast_line(progress())
    assert line == "Broadcast #31: 100,050 deliveries on email, sms, chat; tier 0 first."


def test_a_broadcast_still_planning_says_so_instead_of_a_total() -> None:
    assert "planning, 100,050 planned so far" in fmt.broadcast_line(progress("planning", None))
    queued = progress("queued", None)
    for tier in queued["tiers"]:
        tier["planned"] = 0
    assert (
        fmt.broadcast_line(queued)
        == "Broadcast #31: queued, not planned yet, on email, sms, chat; tier 0 first."
    )


def test_incident_opened_names_the_incident_the_broadcast_and_the_next_command() -> None:
    body = {
        "incident": {
            "id": 12,
            "impact": "major",
            "title": "Checkout is failing",
            "message": {"components": ["payments"]},
        }
    }
    assert fmt.incident_opened(body, progress()) == [
        "Incident #12 opened (major, payments): Checkout is failing",
        "Broadcast #31: 100,050 deliveries on email, sms, chat; tier 0 first.",
        "Watch: outage-dispatcher broadcast watch 31",
    ]


def test_a_silent_update_says_nothing_was_sent_and_an_internal_one_says_it_is_not_public() -> None:
    incident = {"id": 12, "impact": "major", "status": "identified", "title": "Checkout", "message": {}}
    silent = {"incident": incident, "update": {"seq": 2, "notify": False, "public": True}, "broadcast": None}
    assert fmt.incident_updated(silent, None) == [
        "Incident #12 updated: identified (major): Checkout",
        "Not sent (notify: false): shown on the status page only, no broadcast",
    ]
    internal = {"incident": incident, "update": {"seq": 3, "notify": True, "public": False}}
    lines = fmt.incident_updated(internal, progress())
    assert lines[1] == "Internal (public: false): never on the status page"
    assert lines[2].startswith("Broadcast #31:")


def test_the_completed_summary_splits_accepted_from_failed_per_channel() -> None:
    lines = fmt.completed_lines(progress("completed"))
    assert (
        lines[0]
        == "Broadcast #31 completed: 100,050 deliveries, 100,000 accepted (1,000 delivered), 50 failed."
    )
    by_channel = {line.split()[0]: line for line in lines[1:]}
    assert "10 failed" in by_channel["email"] and "61,000 accepted (1,000 delivered)" in by_channel["email"]
    assert "40 failed" in by_channel["sms"]


def test_counts_fold_states_into_done_and_waiting() -> None:
    c = fmt.counts({"pending": 3, "sending": 2, "sent": 4, "delivered": 1, "undelivered": 1, "suppressed": 2})
    assert c == {"total": 13, "done": 8, "accepted": 5, "delivered": 1, "failed": 1, "suppressed": 2}


def test_failed_receipts_show_the_provider_code_and_message() -> None:
    failed = {"state": "failed", "last_error_code": "21211", "last_error": "Invalid 'To' Phone Number"}
    assert fmt.receipt_problem(failed) == "21211 Invalid 'To' Phone Number"
    assert fmt.receipt_problem({"state": "delivered", "last_error_code": None, "last_error": None}) == ""


def test_plain_progress_has_no_control_codes_and_a_line_per_tier_and_channel() -> None:
    lines = fmt.progress_plain(progress())
    assert not any("\x1b" in line for line in lines)
    assert "  tier 2 sms      19,015/35,015  failed=35 sending=16,000 sent=18,980" in lines
    assert "  tier 0 done planned=50 gate=accepted" in lines and len(lines) == 1 + 2 + 5
    later = progress()
    later["tiers"][1]["channels"]["chat"] = {"sent": 19, "delivered": 1}
    assert fmt.changed_lines(lines, fmt.progress_plain(later)) == [
        lines[0],
        "  tier 2 chat     20/20  delivered=1 sent=19",
    ]


def test_the_terminal_view_draws_a_bar_per_tier_and_channel() -> None:
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=120).print(progress_view(progress()))
    text = out.getvalue()
    assert "\x1b[" in text  # drawn for a terminal
    plain = io.StringIO()
    Console(file=plain, width=120).print(progress_view(progress()))
    shown = plain.getvalue()
    assert "tier 0" in shown and "tier 2" in shown and "19,015/35,015" in shown
    assert "━" in shown and "\x1b" not in shown
    assert shown.count("chat") == 2  # in tier 2, and in the per-channel totals


def test_an_error_is_one_line_naming_the_field() -> None:
    body = {
        "error": {
            "code": "validation_error",
            "message": "impact: Input should be 'major'",
            "fields": ["impact"],
        }
    }
    assert error_line(422, body) == "error: impact: Input should be 'major' (validation_error, HTTP 422)"
    unnamed = {"error": {"code": "not_found", "message": "broadcast 9 not found", "fields": ["broadcast_id"]}}
    assert error_line(404, unnamed) == "error: broadcast 9 not found [broadcast_id] (not_found, HTTP 404)"
    assert error_line(502, "Bad Gateway") == "error: HTTP 502: Bad Gateway"


def test_times_are_shown_in_utc_to_the_second() -> None:
    assert fmt.when("2026-12-02T15:53:12.519753+01:00") == "2026-12-02 14:53:12 UTC"
    assert fmt.when("2026-12-02T14:53:12Z") == "2026-12-02 14:53:12 UTC"
    assert fmt.when(None) == ""
