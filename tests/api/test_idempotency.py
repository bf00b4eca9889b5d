"""`Idempotency-Key` races on the real databases (dispatcher/api/idempotency.py): the loser of two
concurrent first attempts answers with the winner's response, however it lost."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from dispatcher.api.deps import Caller
from dispatcher.api.idempotency import Outcome, run_once
from dispatcher.auth import Role
from dispatcher.domain.errors import Conflict
from dispatcher.store.db import Database

COMMANDER = Caller(key_id=1, role=Role.COMMANDER, prefix="od_test")


def _request(key: str) -> Request:
    headers = [(b"idempotency-key", key.encode())]
    return Request(
        {"type": "http", "method": "POST", "path": "/v1/things", "headers": headers, "query_string": b""}
    )


def test_a_loser_refused_because_the_winner_just_did_the_work_replays_the_winners_answer(
    db: Database,
) -> None:
    """The winner commits between the loser's read of the records and the loser's own work, which
    is then refused (a resend finding the row it had just moved): the loser replays, not 409."""

    def winner(_session: object) -> Outcome:
        return 200, {"done": "by the winner"}, None

    def loser(_session: object) -> Outcome:
        run_once(_request("race-1"), db, COMMANDER, {}, winner)  # commits in its own transaction
        raise Conflict("the row is being sent already")

    answer = run_once(_request("race-1"), db, COMMANDER, {}, loser)
    assert answer.status_code == 200 and answer.body == b'{"done":"by the winner"}'
    assert answer.headers["idempotent-replay"] == "true"


def test_a_refusal_with_no_winner_is_still_the_refusal(db: Database) -> None:
    def refused(_session: object) -> Outcome:
        raise Conflict("the row is being sent already")

    with pytest.raises(Conflict, match="being sent"):
        run_once(_request("alone-1"), db, COMMANDER, {}, refused)
