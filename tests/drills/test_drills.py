"""The fault drills of benchmarks/drills.py at their small (CI) size, on the real stack: API,
Celery workers, a private Redis, a private PostgreSQL schema, the provider sandbox.

Each asserts what must hold whatever the machine's speed: nothing lost, duplicates no more than the
deliveries the service itself flagged as possible duplicates, no 5xx and nothing written by hostile
requests. Times are measured and printed (see BENCHMARKS.md), never asserted.
"""

from __future__ import annotations

import json
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
    assert result["duplicates"] <= result["possible_duplicate_flagged"], result


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
    # every duplicate the sandbox saw is one the service flagged as possible (a Redis error in one
    # send thread fails that recipient alone, never the batch's accepted ones)
    assert result["duplicates"] <= result["possible_duplicate_flagged"], result


def test_database_sessions_terminated_mid_broadcast_loses_nothing() -> None:
    from benchmarks.drills import postgres_outage

    result = postgres_outage("small")
    _report(result)
    _nothing_lost(result)
    assert result["fault"]["sessions_terminated"] > 0, result
    assert result["failed"] == 0 and result["sent"] == result["recipients"], result
    assert result["readyz_after"] == 200


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
    assert result["healthz_after"] == 200 and result["readyz_after"] == 200


def test_the_whole_up_sigkilled_and_restarted_on_its_data_dir_loses_nothing() -> None:
    from benchmarks.drills import up_sigkill

    result = up_sigkill("small")
    _report(result)
    assert result["completed"], result
    assert result["lost"] == 0, result
    # reported, not asserted here: copies beyond one per flag come from re-expired leases (issue 18 item 1)
    assert result["duplicates"] <= result["possible_duplicate_flagged"], result
