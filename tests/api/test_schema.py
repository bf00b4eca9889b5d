"""Property-based run against the served OpenAPI spec: whatever schemathesis sends, never a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from config import Settings
from dispatcher.app import create_app
from tests.api.conftest import purge_queues

pytestmark = pytest.mark.slow
EXAMPLES = 25


def key_for(path: str, method: str, keys: dict[str, str]) -> str:
    if path.startswith("/v1/subscribers"):
        return keys["admin"]
    return keys["commander"] if method in ("POST", "PUT") else keys["viewer"]


def test_no_server_errors(settings: Settings, keys: dict[str, str]) -> None:
    app = create_app(settings)
    # The event stream of a live broadcast runs until it completes: not something to fuzz in-process.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex=r".*/events$")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14

    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case: Any) -> None:
            headers = {"Authorization": f"Bearer {key_for(case.path, case.method.upper(), keys)}"}
            response = case.call(headers=headers)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
                )

        fuzz()
    purge_queues(settings)
    assert not failures, "\n".join(failures[:10])
