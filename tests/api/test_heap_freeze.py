"""The API freezes its startup heap (dispatcher/app.py `freeze_startup_heap`): full garbage collections
walking every module, route and template were every route's tail under load (BENCHMARKS.md, "The
status page under load")."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient


def test_started_api_has_frozen_its_startup_objects(client: TestClient) -> None:
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the app, its routes, FastAPI/SQLAlchemy/Celery: not a handful of objects
    assert client.get("/api/v2/summary.json").status_code == 200  # and it still serves the status


def test_garbage_made_after_start_is_still_collected(client: TestClient) -> None:
    class Cycle:
        pass

    a, b = Cycle(), Cycle()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    ref = id(a)
    del a, b
    assert gc.collect() > 0
    assert ref not in {id(o) for o in gc.get_objects() if isinstance(o, Cycle)}
