"""Silent publish through a real worker and the provider sandbox: a `notify: false` opening reaches
no provider, a `public: false` update reaches only the admins' channels and never social, and a
normal update afterwards reaches everyone (so the silence was not a stalled worker)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.base import ChannelName
from dispatcher.domain.message import OutageMessage, Publication
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.incidents.broadcasts import enqueue, publish_incident, publish_update
from dispatcher.store.models import Broadcast, Incident, IncidentUpdate
from tests.harness import Harness

pytestmark = pytest.mark.slow

ADMINS = [f"adm{i}@example.com" for i in range(2)]
OTHERS = [f"stk{i}@example.com" for i in range(2)] + [f"cus{i}@example.com" for i in range(3)]
CHANNELS = [ChannelName.EMAIL, ChannelName.SOCIAL]


@pytest.fixture
def harness(db, sandbox, start_worker, tmp_path: Path):  # type: ignore[no-untyped-def]
    h = Harness(db, sandbox, start_worker, tmp_path)
    yield h
    h.stop()


def test_silent_and_internal_updates_reach_only_whom_they_say(harness: Harness) -> None:
    subs = [SubscriberIn(external_id=e, lists=["admins"], email=e) for e in ADMINS]
    subs += [
        SubscriberIn(external_id=e, lists=["stakeholders" if e.startswith("stk") else "customers"], email=e)
        for e in OTHERS
    ]
    harness.subscribers(subs)
    harness.worker()
    message = OutageMessage(title="Checkout is failing", impact="major")
    with harness.database.session() as session:
        incident, opening, silent = publish_incident(
            session, harness.settings, message, channels=CHANNELS, publication=Publication(notify=False)
        )
        incident_id, opening_id = incident.id, opening.id
    assert silent is None

    with harness.database.session() as session:
        _, _, internal = publish_update(
            session,
            harness.settings,
            incident_id,
            {"status": "identified", "cause": "Internal: the processor's release 4.2."},
            channels=CHANNELS,
            publication=Publication(public=False),
        )
        assert internal is not None
        internal_id = internal.id
    enqueue(internal_id)
    done = harness.wait(internal_id)
    assert done["totals"]["sent"] == len(ADMINS) and done["totals"]["failed"] == 0
    seen = harness.sandbox.messages()
    assert sorted(m["recipient"] for m in seen) == sorted(ADMINS)
    assert {m["channel"] for m in seen} == {"email"}  # never the social post
    assert all("release 4.2" in (m.get("text") or m.get("body") or str(m)) for m in seen)

    with harness.database.session() as session:
        row = session.get(Incident, incident_id)
        assert row is not None and row.status == "investigating"  # the public state did not move
        opened = session.get(IncidentUpdate, opening_id)
        assert opened is not None and (opened.notify, opened.public) == (False, True)
        _, _, loud = publish_update(
            session, harness.settings, incident_id, {"status": "monitoring"}, channels=CHANNELS
        )
        assert loud is not None
        loud_id = loud.id
    enqueue(loud_id)
    harness.wait(loud_id)
    everyone = Counter((m["channel"], m["recipient"]) for m in harness.sandbox.messages())
    # the internal update's two admin emails, then one of everything for the public update: the
    # silent opening added nothing, and nothing went twice
    assert everyone[("email", ADMINS[0])] == 2 and everyone[("email", ADMINS[1])] == 2
    assert all(everyone[("email", e)] == 1 for e in OTHERS)
    assert sum(n for (channel, _), n in everyone.items() if channel == "social") == 1
    with harness.database.session() as session:
        broadcasts = session.scalars(select(Broadcast.update_id).where(Broadcast.incident_id == incident_id))
        assert opening_id not in set(broadcasts)
