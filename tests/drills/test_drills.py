"""The fault drills of benchmarks/drills.py at their small (CI) size, on the real stack: API,
Celery workers, a private Redis, a private PostgreSQL schema, the provider sandbox.

Each asserts what must hold whatever the machine's speed: nothing lost, no copy at the sandbox that
the service did not count (per (channel, address), copies <= the row's `sends`), no 5xx and nothing
written by hostile requests. Times are measured and printed (see BENCHMARKS.md), never asserted.

`DRILL_REPEAT` sets how many database drills run in a row in the repeated test (default 10, as the
issue asks: 500 recipients and a 3 s outage each, about 80 s for all ten on two cores beside two
CPU burners; set it lower on a slower machine).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.conftest import PG_UNAVAILABLE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PG_UNAVAILABLE is not None, reason=str(PG_UNAVAILABLE)),
]


def _report(result: dict[str, Any]) -> None:
    print(json.dumps(result))


def _nothing_lost(result: dict[str, Any]) -> None:
    assert result["lost"] == 0, result
    _every_copy_counted(result)


def _every_copy_counted(result: dict[str, Any]) -> None:
    assert result["uncounted_copies"] == 0, result
    assert result["duplicates"] <= result["extra_sends_counted"], result


def test_a_worker_sigkilled_three_times_loses_nothing() -> None:
    from benchmarks.drills import sigkill

    result = sigkill("small")
    _report(result)
    _nothing_lost(result)
    assert result["failed"] == 0 and result["sent"] == result["recipients"], result
    assert len(result["kills"]) == 3


def test_redis_killed_and_restarted_mid_broadcast_loses_nothing() -> None:
    from benchmarks.drills import redis_restart

    result = redis_restart("small")
    _report(result)
    assert result["lost"] == 0, result
    assert result["failed"] == 0 and result["sent"] == result["recipients"], result
    # every copy the sandbox saw is one the service counted (a Redis error in one send thread fails
    # that recipient alone, never the batch's accepted ones)
    _every_copy_counted(result)
    assert result["extra_sends_counted"] <= result["in_flight"], result


def test_database_sessions_terminated_mid_broadcast_loses_nothing() -> None:
    from benchmarks.drills import postgres_outage

    result = postgres_outage("small")
    _report(result)
    _nothing_lost(result)
    assert result["fault"]["sessions_terminated"] > 0, result
    assert result["failed"] == 0 and result["sent"] == result["recipients"], result
    assert result["readyz_after"] == 200
    assert result["counted_not_received"] == 0 and result["rows_sent_3_times"] == 0, result
    assert result["extra_sends_counted"] <= result["in_flight"], result


def test_the_database_drill_has_copies_equal_to_counted_sends_and_no_row_sent_three_times() -> None:
    """Several database drills in a row with two CPU-bound processes beside them: the loaded machine
    where the sandbox once counted 3,750 copies against 2,500 flagged rows."""
    from benchmarks.drills import postgres_repeated

    runs = int(os.environ.get("DRILL_REPEAT", "10"))
    result = postgres_repeated("small", runs=runs, burners=2)
    _report({k: v for k, v in result.items() if k != "each"})
    for run in result["each"]:
        assert run["lost"] == 0 and run["failed"] == 0, run
        assert run["uncounted_copies"] == 0 and run["counted_not_received"] == 0, run  # copies = sends
        assert run["rows_sent_3_times"] == 0 and run["most_copies"] <= 2, run
        assert run["sessions_terminated"] > 0, run


def test_flaky_providers_lose_nothing() -> None:
    from benchmarks.drills import provider_faults

    result = provider_faults("small")
    _report(result)
    _nothing_lost(result)
    assert sum(result["provider_faults"].values()) > 0, result


def test_sms_down_admins_fail_over_and_the_rest_follow() -> None:
    from benchmarks.drills import sms_down

    result = sms_down("small")
    _report(result)
    _nothing_lost(result)
    assert result["admin_failover_emails_sent"] == result["admins"], result
    assert (
        result["customer_sms_sent"] + result["customer_sms_failed"] == result["recipients"] - result["admins"]
    )


def test_hostile_requests_are_refused_and_write_nothing() -> None:
    from benchmarks.drills import hostile

    result = hostile("small")
    _report(result)
    assert result["server_errors_5xx"] == 0, result
    assert result["accepted_2xx"] == 0, result
    assert result["transport_errors"] == {}, result
    assert result["rows_changed"] == {}, result
    audited = result["audited_statuses"]
    assert audited and all(int(status) >= 400 for status in audited), result  # refusals, each kept
    assert sum(audited.values()) <= result["requests"] - result["statuses"].get("401", 0), result
    assert result["healthz_after"] == 200 and result["readyz_after"] == 200


def test_forged_and_misdirected_callbacks_change_no_delivery() -> None:
    from benchmarks.drills import forged_callbacks

    result = forged_callbacks("small")
    _report(result)
    assert result["forged_refused_403"] == result["forged_sent"] > 0, result
    assert result["misdirected_statuses"] == {"204": result["misdirected_sent"]}, result
    assert result["ignored_counted"] == result["misdirected_sent"], result
    assert result["deliveries_changed"] == 0 and result["progress_changed"] is False, result


def test_the_whole_up_sigkilled_and_restarted_on_its_data_dir_loses_nothing() -> None:
    from benchmarks.drills import up_sigkill

    result = up_sigkill("small")
    _report(result)
    assert result["completed"], result
    assert result["lost"] == 0, result
    assert result["uncounted_copies"] == 0, result
