"""The status snapshot: everything the public status page, its feeds and the Statuspage-compatible
JSON show, built in one read and kept twice, in the database (one row every API process reads)
and in each process (what it serves while the database is unreachable).

`rebuild_snapshot` runs inside the transaction of every incident, update and maintenance change
(dispatcher/incidents/*): it locks the row first, so two changes committing at once rebuild one
after the other and the later build sees the earlier change (PostgreSQL re-reads after the lock;
SQLite serialises writers). `current_snapshot` is what the routes call: the row, re-read at most
every REFRESH_S, else this process's copy, marked stale with its age.

Field names are Atlassian Statuspage's public v2 ones (README "Status page" has the mapping).
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import event, func, select, true
from sqlalchemy.orm import Session

from config import Settings
from dispatcher.domain.status import (
    Affecting,
    ComponentSpec,
    affects,
    component_statuses,
    default_components,
    overall,
    worst,
)
from dispatcher.store.db import get_database
from dispatcher.store.models import Incident, IncidentUpdate, StatusSnapshot

HISTORY_DAYS = 90
REFRESH_S = 1.0  # how old one process's copy may get before it is re-read (in the background)
STALE_AFTER_S = 10.0  # a re-read running this long without an answer: the copy is served marked stale
ROW_ID = 1
OPEN_INCIDENT = ("investigating", "identified", "monitoring")
# ours -> Statuspage's: maintenance has no `cancelled` there; a cancelled window is over, so completed
MAINTENANCE_STATUS = {
    "scheduled": "scheduled",
    "in_progress": "in_progress",
    "completed": "completed",
    "cancelled": "completed",
}


class SnapshotUnavailable(RuntimeError):
    """No snapshot at all: the database is unreachable and this process never read one."""


@dataclass(frozen=True)
class Snapshot:
    body: dict[str, Any]
    etag: str
    generated_at: datetime
    stale: bool = False
    read_at: float = field(default_factory=time.monotonic, compare=False)  # monotonic, last good read

    def age_s(self, now: datetime | None = None) -> int:
        """Seconds since this process last read it from the database (or built it): how old what
        it says may be. What X-Status-Snapshot-Age and the page show; about 0 while all is well.
        (`now` is accepted for callers that pass one; the age is measured on the monotonic clock.)"""
        return max(0, int(time.monotonic() - self.read_at))

    def checked_at(self) -> datetime:
        """When it was last known current (wall clock): `generated_at` is when its content last
        changed, which may be long before."""
        return datetime.now(UTC) - timedelta(seconds=time.monotonic() - self.read_at)


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


@functools.lru_cache(maxsize=4096)
def short_id(*parts: object) -> str:
    """A stable, Statuspage-looking id (12 lowercase characters) for things we do not number."""
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:12]


def component_specs(settings: Settings) -> list[ComponentSpec]:
    """The configured components in display order (README "Status page")."""
    if not settings.status_components:
        return default_components(settings.public_components, settings.service_name)
    specs = [
        ComponentSpec(
            name=str(c["name"]),
            description=c.get("description"),
            group=c.get("group"),
            order=int(c.get("order", i)),
        )
        for i, c in enumerate(settings.status_components)
    ]
    return sorted(specs, key=lambda s: s.order)


def page_id(settings: Settings) -> str:
    return short_id("page", settings.service_name)


def page_url(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + "/status"


def _body(message: dict[str, Any]) -> str:
    parts = [message.get("summary"), message.get("details")]
    return "\n\n".join(p for p in parts if p) or str(message.get("title", ""))


class ShownIncident(NamedTuple):
    """The incident columns the snapshot shows: with its public updates' count and last id, the
    version of what it shows (updates are only ever added, so a new public one changes both)."""

    id: int
    kind: str
    title: str
    status: str
    impact: str
    components: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    starts_at: datetime | None
    ends_at: datetime | None
    public_updates: int
    last_update_id: int | None


class ShownUpdate(NamedTuple):
    id: int
    status: str
    body: str
    posted_at: datetime
    notify: bool


def _affecting(incident: ShownIncident) -> Affecting:
    return Affecting(
        impact=incident.impact, components=incident.components, maintenance=incident.kind == "maintenance"
    )


def _is_open(incident: ShownIncident) -> bool:
    if incident.kind == "maintenance":
        return incident.status == "in_progress"
    return incident.status in OPEN_INCIDENT


RenderedUpdate = tuple[str, str, str, str | None, bool]  # id, shown status, body, time, notify


class _Rendered(NamedTuple):
    """One incident's part of the snapshot, but for its `components` (their statuses follow every
    incident) and the names in its updates' `affected_components` (they follow the settings)."""

    version: ShownIncident
    own: dict[str, Any]
    updates: tuple[RenderedUpdate, ...]  # newest first


class _Rendering:
    """This process's rendered incidents per database and page, each kept with the version it shows:
    a rebuild reads every incident's columns but loads and renders only what changed since, so an
    opening's transaction no longer loads 90 days of updates. Entries made in a transaction are
    kept only once it commits: a rolled-back one's ids can come back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[tuple[str, ...], dict[int, _Rendered]] = {}

    def get(self, scope: tuple[str, ...]) -> dict[int, _Rendered]:
        with self.lock:
            return self.items.get(scope, {})

    def keep(self, scope: tuple[str, ...], fresh: dict[int, _Rendered], shown: set[int]) -> None:
        with self.lock:
            held = self.items.get(scope, {})
            self.items[scope] = {i: r for i, r in {**held, **fresh}.items() if i in shown}


RENDERED = _Rendering()


def _shown_incidents(session: Session, since: datetime) -> list[ShownIncident]:
    """The incidents of the last 90 days and every one still open or to come, newest first, each
    with its version: one query, no ORM objects (this runs in every commander's transaction). The
    updates are counted per incident shown, through their (incident_id, seq) index, so a long
    history outside the 90 days costs nothing."""
    own = (IncidentUpdate.incident_id == Incident.id) & (IncidentUpdate.public == true())
    public_updates = select(func.count()).where(own).scalar_subquery()
    last_update = select(func.max(IncidentUpdate.id)).where(own).scalar_subquery()
    rows = session.execute(
        select(
            Incident.id,
            Incident.kind,
            Incident.title,
            Incident.status,
            Incident.impact,
            Incident.message,
            Incident.created_at,
            Incident.updated_at,
            Incident.resolved_at,
            Incident.starts_at,
            Incident.ends_at,
            public_updates,
            last_update,
        )
        .where((Incident.updated_at >= since) | Incident.status.in_(("scheduled", *OPEN_INCIDENT)))
        .order_by(Incident.created_at.desc(), Incident.id.desc())
    ).all()
    # columns 0-4 and 6-10 as selected; 5 is the message, of which only the components are shown
    return [ShownIncident(*r[:5], _components(r[5]), *r[6:11], int(r[11]), r[12]) for r in rows]


def _components(message: dict[str, Any] | None) -> tuple[str, ...]:
    return tuple((message or {}).get("components") or ())


def _public_updates(session: Session, ids: list[int]) -> dict[int, list[ShownUpdate]]:
    """The public updates of these incidents, newest first."""
    found: dict[int, list[ShownUpdate]] = {i: [] for i in ids}
    if not ids:
        return found
    rows = session.execute(
        select(
            IncidentUpdate.incident_id,
            IncidentUpdate.id,
            IncidentUpdate.status,
            IncidentUpdate.message,
            IncidentUpdate.posted_at,
            IncidentUpdate.notify,
        )
        .where(IncidentUpdate.incident_id.in_(ids), IncidentUpdate.public == true())
        .order_by(IncidentUpdate.incident_id, IncidentUpdate.seq.desc())
    )
    for incident_id, update_id, status, message, posted_at, notify in rows:
        found[incident_id].append(ShownUpdate(update_id, status, _body(message), posted_at, bool(notify)))
    return found


def _render(incident: ShownIncident, updates: list[ShownUpdate], settings: Settings) -> _Rendered:
    """An incident's own part of the snapshot (pure)."""
    maintenance = incident.kind == "maintenance"
    iid = str(incident.id)
    monitoring = [u.posted_at for u in updates if u.status == "monitoring"]
    status = MAINTENANCE_STATUS.get(incident.status, incident.status) if maintenance else incident.status
    own: dict[str, Any] = {
        "id": iid,
        "name": incident.title,
        "status": status,
        "created_at": iso(incident.created_at),
        "updated_at": iso(incident.updated_at),
        "monitoring_at": iso(min(monitoring)) if monitoring else None,
        "resolved_at": iso(incident.resolved_at),
        "impact": "maintenance" if maintenance else incident.impact,
        "shortlink": f"{page_url(settings)}/incidents/{iid}",
        "started_at": iso(incident.starts_at or incident.created_at),
        "page_id": page_id(settings),
    }
    if maintenance:
        own["scheduled_for"] = iso(incident.starts_at)
        own["scheduled_until"] = iso(incident.ends_at)
    shown = tuple(
        (
            str(u.id),
            MAINTENANCE_STATUS.get(u.status, u.status) if maintenance else u.status,
            u.body,
            iso(u.posted_at),
            u.notify,
        )
        for u in updates
    )
    return _Rendered(incident, own, shown)


def _incident_json(rendered: _Rendered, affected: list[dict[str, Any]], pid: str) -> dict[str, Any]:
    """The rendered part with what follows the page: the affected components, as they stand now."""
    iid = rendered.own["id"]
    named = [
        {"code": short_id("component", c["name"]), "name": c["name"], "old_status": None, "new_status": None}
        for c in affected
    ]
    updates = [
        {
            "id": update_id,
            "status": status,
            "body": body,
            "incident_id": iid,
            "created_at": at,
            "updated_at": at,
            "display_at": at,
            "affected_components": [dict(n) for n in named] or None,
            "deliver_notifications": notify,
            "custom_tweet": None,
            "tweet_id": None,
        }
        for update_id, status, body, at, notify in rendered.updates
    ]
    out = dict(rendered.own)
    maintenance_fields = {k: out.pop(k) for k in ("scheduled_for", "scheduled_until") if k in out}
    out["incident_updates"] = updates
    out["components"] = affected
    out.update(maintenance_fields)
    return out


def build_snapshot(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    """The snapshot's body: `generated_at`, `page`, `status`, `components`, `incidents` (the last
    90 days, newest first, each with its public `incident_updates` newest first) and
    `scheduled_maintenances` (the last 90 days and every one still to come)."""
    body, _ = _build(session, settings, now)
    return body


def _scope(settings: Settings) -> tuple[str, ...]:
    return (settings.effective_database_url, page_url(settings), page_id(settings))


def _build(
    session: Session, settings: Settings, now: datetime
) -> tuple[dict[str, Any], dict[int, _Rendered]]:
    """build_snapshot, and the incidents it rendered anew (to keep once the transaction commits)."""
    rows = _shown_incidents(session, now - timedelta(days=HISTORY_DAYS))
    held = RENDERED.get(_scope(settings))
    stale = [r.id for r in rows if r.id not in held or held[r.id].version != r]
    loaded = _public_updates(session, stale)
    fresh = {i: _render(r, loaded[i], settings) for r in rows if (i := r.id) in loaded}
    rendered = {**held, **fresh}
    pid = page_id(settings)
    specs = component_specs(settings)
    open_items = [_affecting(i) for i in rows if _is_open(i)]
    statuses = component_statuses([s.name for s in specs], open_items)
    listed = {s.name.strip().casefold() for s in specs}
    updated_at = max((i.updated_at for i in rows), default=None) or now

    def touched(name: str) -> datetime:
        """When something affecting the component last changed (else when the page did)."""
        return max((i.updated_at for i in rows if affects(_affecting(i), name, listed)), default=updated_at)

    components: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for position, spec in enumerate(specs, start=1):
        group_id = short_id("group", spec.group) if spec.group else None
        if spec.group and spec.group not in groups:
            groups[spec.group] = {
                "id": group_id,
                "name": spec.group,
                "status": "operational",
                "created_at": iso(updated_at),
                "updated_at": iso(updated_at),
                "position": position,
                "description": None,
                "showcase": False,
                "start_date": None,
                "group_id": None,
                "page_id": pid,
                "group": True,
                "only_show_if_degraded": False,
                "components": [],
            }
            components.append(groups[spec.group])
        component = {
            "id": short_id("component", spec.name),
            "name": spec.name,
            "status": statuses[spec.name],
            "created_at": iso(updated_at),
            "updated_at": iso(touched(spec.name)),
            "position": position,
            "description": spec.description,
            "showcase": True,
            "start_date": None,
            "group_id": group_id,
            "page_id": pid,
            "group": False,
            "only_show_if_degraded": False,
        }
        components.append(component)
        if spec.group:
            group = groups[spec.group]
            group["components"].append(component["id"])
            group["status"] = worst([group["status"], component["status"]])
    plain = [c for c in components if not c["group"]]

    def incident_json(incident: ShownIncident) -> dict[str, Any]:
        names = {n.strip().casefold() for n in incident.components}
        affected = [c for c in plain if not names or c["name"].casefold() in names]
        return _incident_json(rendered[incident.id], affected, pid)

    body = {
        "generated_at": iso(now),
        "page": {
            "id": pid,
            "name": settings.service_name,
            "url": page_url(settings),
            "time_zone": "Etc/UTC",
            "updated_at": iso(updated_at),
        },
        "status": overall(open_items),
        "components": components,
        "incidents": [incident_json(i) for i in rows if i.kind != "maintenance"],
        "scheduled_maintenances": [incident_json(i) for i in rows if i.kind == "maintenance"],
    }
    return body, fresh


def digest(body: dict[str, Any]) -> str:
    """The snapshot's version: its content without `generated_at` (a rebuild that changes nothing
    keeps the ETag clients hold)."""
    content = {k: v for k, v in body.items() if k != "generated_at"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[
        :32
    ]


class _Copies:
    """This process's last good snapshot per database URL, when it was read (monotonic), whether
    the last refresh failed, and whether one is running (one at a time, in the background)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[str, Snapshot] = {}
        self.failed: dict[str, bool] = {}
        self.refreshing: dict[str, float] = {}  # url -> when its running refresh began (monotonic)


COPIES = _Copies()


def _keep(url: str, snapshot: Snapshot) -> Snapshot:
    with COPIES.lock:
        COPIES.items[url] = snapshot
        COPIES.failed[url] = False
    return snapshot


def rebuild_snapshot(session: Session, settings: Settings, now: datetime | None = None) -> Snapshot:
    """Rebuilds the stored snapshot in `session`'s transaction (commits with the change that
    called it; this process's copy follows on commit). The row is locked before the build reads,
    so concurrent changes serialise."""
    now = now or datetime.now(UTC)
    session.flush()
    row = session.scalars(
        select(StatusSnapshot).where(StatusSnapshot.id == ROW_ID).with_for_update()
    ).one_or_none()
    body, fresh = _build(session, settings, now)
    shown = {int(i["id"]) for i in (*body["incidents"], *body["scheduled_maintenances"])}
    etag = digest(body)
    if row is None:
        row = StatusSnapshot(id=ROW_ID, body=body, etag=etag, generated_at=now)
        session.add(row)
    elif row.etag != etag:
        row.body, row.etag, row.generated_at = body, etag, now
    session.flush()
    built = Snapshot(body=row.body, etag=row.etag, generated_at=row.generated_at, read_at=time.monotonic())
    url, scope = settings.effective_database_url, _scope(settings)

    def committed(_session: Session) -> None:
        _keep(url, replace(built, read_at=time.monotonic()))
        RENDERED.keep(scope, fresh, shown)

    event.listen(session, "after_commit", committed, once=True)
    return built


def _read(settings: Settings) -> Snapshot:
    """The stored row (built now if there is none)."""
    clock = time.monotonic()
    with get_database(settings).session() as session:
        row = session.get(StatusSnapshot, ROW_ID, populate_existing=True)
        if row is None or not row.etag:  # never built (the migration's placeholder)
            built = rebuild_snapshot(session, settings)
            return replace(built, read_at=clock)
        return Snapshot(row.body, row.etag, row.generated_at, read_at=clock)


def _refresh(settings: Settings, url: str) -> None:
    try:
        _keep(url, _read(settings))
    except Exception:  # any database failure: keep serving the copy, marked stale
        with COPIES.lock:
            COPIES.failed[url] = True
    finally:
        with COPIES.lock:
            COPIES.refreshing.pop(url, None)


def held_snapshot(settings: Settings) -> Snapshot | None:
    """This process's copy to serve, never waiting on the database (None when it holds none yet): a
    copy older than REFRESH_S is re-read in the background (one thread at a time). While the last
    re-read failed, or one has been running for STALE_AFTER_S without an answer (a database that
    hangs), the copy is served with stale=True. An old copy alone is no evidence: after a quiet
    spell the first request starts a re-read and is served the copy as it is, not marked stale."""
    url = settings.effective_database_url
    with COPIES.lock:
        copy = COPIES.items.get(url)
        failed = COPIES.failed.get(url, False)
        if copy is None:
            return None
        clock = time.monotonic()
        started = COPIES.refreshing.get(url)
        start = started is None and clock - copy.read_at >= REFRESH_S
        if start:
            COPIES.refreshing[url] = clock
    if start:
        threading.Thread(target=_refresh, args=(settings, url), daemon=True).start()
    stale = failed or (started is not None and clock - started > STALE_AFTER_S)
    return replace(copy, stale=True) if stale else copy


def current_snapshot(settings: Settings) -> Snapshot:
    """The snapshot to serve: this process's copy (held_snapshot), else one read from the database
    now. Raises SnapshotUnavailable when there is no copy and the database does not answer."""
    held = held_snapshot(settings)
    if held is not None:
        return held
    try:
        return _keep(settings.effective_database_url, _read(settings))
    except Exception as exc:
        raise SnapshotUnavailable("no status snapshot: the database is unreachable") from exc
