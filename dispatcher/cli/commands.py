"""`outage-dispatcher`: run the service (up, web, worker, beat, sandbox) and manage it (db, keys)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from config import get_settings
from dispatcher.cli import client
from dispatcher.cli import format as fmt
from dispatcher.cli.maintenance import maintenance_app
from dispatcher.cli.reads import broadcasts_app, incidents_app, receipts
from dispatcher.cli.suppressions import suppressions_app

if TYPE_CHECKING:
    from dispatcher.store.db import Database

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database migrations.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed; shown once).")
incident_app = typer.Typer(no_args_is_help=True, help="Open incidents and post updates (through the API).")
broadcast_app = typer.Typer(no_args_is_help=True, help="Follow broadcasts (through the API).")
subscribers_app = typer.Typer(no_args_is_help=True, help="Manage subscribers (through the API).")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(incident_app, name="incident")
app.add_typer(broadcast_app, name="broadcast")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(maintenance_app, name="maintenance")
app.add_typer(suppressions_app, name="suppressions")
app.add_typer(incidents_app, name="incidents")
app.add_typer(broadcasts_app, name="broadcasts")

Url = Annotated[str, typer.Option("--url", envvar="DISPATCHER_URL", help="the API")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="DISPATCHER_API_KEY", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="print the API's JSON body instead")]
Silent = Annotated[bool, typer.Option(help="notify: false: recorded and shown on the page, sent to nobody")]
PlanWait = Annotated[
    float, typer.Option(min=0, help="seconds to wait for planning to count the deliveries (0: don't)")
]
DEFAULT_URL = "http://127.0.0.1:8000"


@app.callback()
def _root(
    as_json: Annotated[bool, typer.Option("--json", help="every command prints the API's JSON body")] = False,
) -> None:
    """The `--json` given before any command holds for the command that follows."""
    client.json_everywhere(as_json)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    sandbox_port: Annotated[int, typer.Option(help="provider sandbox port")] = 8001,
    callback_port: Annotated[int, typer.Option(help="the providers' status webhooks' API port")] = 8002,
    data_dir: Annotated[Path, typer.Option(help="where state lives")] = Path(".dispatcher"),
    workers: Annotated[int, typer.Option(help="Celery worker processes")] = 2,
) -> None:
    """Everything in one command on embedded defaults: Redis, SQLite, sandbox, API, worker, scheduler."""
    from dispatcher.cli.up import Up

    everything = Up(
        port=port,
        sandbox_port=sandbox_port,
        callback_port=callback_port,
        data_dir=data_dir.resolve(),
        worker_concurrency=workers,
    )
    raise typer.Exit(everything.run())


@app.command()
def web(
    host: Annotated[str, typer.Option()] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    callbacks: Annotated[
        bool, typer.Option(help="only the providers' webhooks, health and metrics (`up`'s callbacks)")
    ] = False,
) -> None:
    """The API alone (Procfile `web`); applies migrations first."""
    import uvicorn

    from dispatcher.app import create_app, create_callbacks_app

    _start_checks()
    _migrate_and_bootstrap()
    uvicorn.run((create_callbacks_app if callbacks else create_app)(), host=host, port=port, access_log=False)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option("-c", "--concurrency")] = 2,
    queues: Annotated[str | None, typer.Option("-Q", "--queues", help="default: every queue")] = None,
) -> None:
    """A Celery worker (Procfile `worker`; with `-Q urgent -c 1`, the urgent lane, Procfile `urgent`)."""
    from dispatcher.engine.broker import QUEUES
    from dispatcher.engine.broker import app as celery

    _start_checks()
    celery.worker_main(
        [
            "worker",
            *("-Q", queues or ",".join(QUEUES), "-c", str(concurrency)),
            *("-n", f"worker-{os.getpid()}@%h"),  # the pool and the lane on one host need two names
            "--loglevel",
            "INFO",
        ]
    )


@app.command()
def beat() -> None:
    """The scheduler's clock (Procfile `beat`): polls for due notices and sweeps stale deliveries."""
    from dispatcher.engine.broker import app as celery

    schedule = get_settings().data_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    celery.start(["beat", "-s", str(schedule), "--loglevel", "INFO"])


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from sqlalchemy import inspect

    from dispatcher.cli.audit import audit_cli
    from dispatcher.store.db import get_database
    from dispatcher.store.migrate import current_revision, upgrade

    database = get_database(get_settings())
    before = current_revision(database)
    upgrade(database, revision)
    after = current_revision(database)
    if after != before and inspect(database.engine).has_table("audit_log"):  # from revision 0010 on
        with database.session() as session:
            audit_cli(session, "db.upgrade", f"revision {before} -> {after}", 200)
    typer.echo(f"database at revision {after}")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="commander, viewer or admin")],
    label: Annotated[str | None, typer.Option()] = None,
    as_json: Json = False,
) -> None:
    """Create a key and print it once: the key alone on stdout (for `KEY=$(...)`), what it is and how
    to revoke it on stderr; only its hash is stored. `--json`: {"id", "role", "label", "key"}."""
    from dispatcher.auth import Role, issue_key
    from dispatcher.cli.audit import audit_cli

    try:
        parsed = Role(role)
    except ValueError:
        raise client.bad_input("--role", "must be commander, viewer or admin") from None
    with _keys_database().session() as session:
        key_id, key = issue_key(session, parsed, label)
        audit_cli(session, "keys.create", f"key {key_id}", 201)
    if client.json_wanted(as_json):
        client.emit({"id": key_id, "role": parsed.value, "label": label, "key": key})
        return
    typer.echo(key)
    named = f" '{label}'" if label else ""
    typer.echo(
        f"Created {parsed.value} key{named}, key id {key_id}. The key above is shown only this once: "
        f"store it now. Revoke it with: outage-dispatcher keys revoke {key_id}",
        err=True,
    )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="the key's id (printed by `keys create`)")],
) -> None:
    """Revoke exactly one key, by id; requests with it are refused from now on."""
    from dispatcher.auth import revoke_key
    from dispatcher.cli.audit import audit_cli

    with _keys_database().session() as session:
        revoked = revoke_key(session, key_id)
        audit_cli(session, "keys.revoke", f"key {key_id}", 200 if revoked else 404)
    if not revoked:
        typer.echo(f"error: no active key with id {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked key {key_id}: requests with it are refused from now on")


@incident_app.command("open")
def incident_open(
    file: Annotated[Path | None, typer.Argument(help="message as YAML or JSON")] = None,
    title: Annotated[str | None, typer.Option()] = None,
    impact: Annotated[str | None, typer.Option()] = None,
    summary: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    channel: Annotated[list[str] | None, typer.Option("--channel", help="override; repeat")] = None,
    silent: Silent = False,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    plan_wait: PlanWait = 2.0,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Open an incident from FILE and/or options, and broadcast it (with --silent: show it only)."""
    body = client.message_body(
        file, title=title, impact=impact, summary=summary, status=status, channels=channel
    )
    if silent:
        body["notify"] = False
    if "title" not in body:
        raise client.bad_input("FILE / --title", "give a message FILE or --title")
    created = client.call(url, api_key, "POST", "/v1/incidents", body, idempotency_key=idempotency_key)
    _show_created(created, url, api_key, plan_wait, as_json, fmt.incident_opened)


@incident_app.command("update")
def incident_update(
    incident_id: Annotated[int, typer.Argument(metavar="ID")],
    file: Annotated[Path | None, typer.Argument(help="changes as YAML or JSON")] = None,
    status: Annotated[str | None, typer.Option()] = None,
    impact: Annotated[str | None, typer.Option()] = None,
    summary: Annotated[str | None, typer.Option()] = None,
    title: Annotated[str | None, typer.Option()] = None,
    eta: Annotated[str | None, typer.Option(help="with a zone: 2026-01-01T10:00:00Z")] = None,
    reopen: Annotated[bool, typer.Option(help="reopen a resolved incident")] = False,
    channel: Annotated[list[str] | None, typer.Option("--channel", help="override; repeat")] = None,
    silent: Silent = False,
    internal: Annotated[
        bool, typer.Option(help="public: false: to --tier only (default the admins), never on the page")
    ] = False,
    tier: Annotated[list[int] | None, typer.Option("--tier", help="with --internal; repeat")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    plan_wait: PlanWait = 2.0,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Post an update to incident ID and broadcast it."""
    body = client.message_body(
        file, title=title, impact=impact, summary=summary, status=status, channels=channel, eta=eta
    )
    if reopen:
        body["reopen"] = True
    if silent:
        body["notify"] = False
    if internal:
        body["public"] = False
    if tier:
        body["tiers"] = tier
    path = f"/v1/incidents/{incident_id}/updates"
    created = client.call(url, api_key, "POST", path, body, idempotency_key=idempotency_key)
    _show_created(created, url, api_key, plan_wait, as_json, fmt.incident_updated)


def _show_created(
    created: dict[str, Any],
    url: str,
    api_key: str | None,
    plan_wait: float,
    as_json: bool,
    lines: Callable[[dict[str, Any], dict[str, Any] | None], list[str]],
) -> None:
    """The API's answer with `--json`; else the incident, the broadcast's size once planning has
    counted it (read back for up to `plan_wait` seconds, else how far it got) and the watch command."""
    if client.json_wanted(as_json):
        client.emit(created)
        return
    progress = created["broadcast"]
    if progress is None:  # notify: false, nothing to follow
        typer.echo("\n".join(lines(created, None)))
        return
    deadline = time.monotonic() + plan_wait
    while progress["planned_at"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
        progress = client.call(url, api_key, "GET", f"/v1/broadcasts/{progress['id']}")
    typer.echo("\n".join(lines(created, progress)))


@app.command("preview")
def preview_cmd(
    file: Annotated[Path, typer.Argument(help="message as YAML or JSON")],
    locale: Annotated[str | None, typer.Option(help="render as a reader of this language (de-AT)")] = None,
    timezone: Annotated[str | None, typer.Option(help="and in this time zone (Asia/Tokyo)")] = None,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Show every channel's variant and the audience per tier; sends nothing."""
    reader = {"locale": locale, "timezone": timezone}
    body = client.call(url, api_key, "POST", "/v1/preview", client.message_body(file), params=reader)
    client.show(body, fmt.preview_lines(body), as_json)


@broadcast_app.command("watch")
def broadcast_watch(
    broadcast_id: Annotated[int, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="each event's JSON body, one per line")] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Live progress bars per tier and channel until the broadcast completes, then its outcome.
    Plain lines when stdout is not a terminal."""
    from dispatcher.cli.watch import watch

    watch(url, api_key, broadcast_id, as_json=client.json_wanted(as_json))


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[Path, typer.Argument(help="CSV with a header row")],
    atomic: Annotated[bool, typer.Option(help="import nothing if any row is bad")] = False,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Import subscribers from a CSV file; bad rows are reported by row number and field."""
    path = "/v1/subscribers/import" + ("?atomic=true" if atomic else "")
    body = client.call(url, api_key, "POST", path, csv_file=file)
    client.show(body, fmt.import_lines(body), as_json)


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings, secrets masked."""
    typer.echo(json.dumps(get_settings().describe(), indent=2, default=str))


def _start_checks() -> None:
    """Fails fast, naming the setting, on broken templates or unusable provider settings."""
    from channels.rendering import TemplateError
    from dispatcher.domain.errors import DispatcherError
    from dispatcher.startup import check

    try:
        for line in check(get_settings()):
            typer.echo(f"channel {line}", err=True)
    except (DispatcherError, TemplateError) as exc:
        typer.echo(f"cannot start: {exc.message}", err=True)
        raise typer.Exit(2) from None


def _keys_database() -> Database:
    """The database the key commands write to. The embedded default is brought to the schema's head
    (a newcomer may create a key before the first `up`); a configured database that is behind gets
    an error naming the command that upgrades it, never a traceback."""
    from dispatcher.cli.audit import migrate_and_bootstrap
    from dispatcher.store.db import get_database
    from dispatcher.store.migrate import current_revision, head_revision

    settings = get_settings()
    if not settings.database_url:
        return migrate_and_bootstrap(settings)
    database = get_database(settings)
    current, head = current_revision(database), head_revision(database)
    if current != head:
        typer.echo(
            f"error: the database is at revision {current or 'none'} and this version needs {head}: "
            "run `outage-dispatcher db upgrade` first",
            err=True,
        )
        raise typer.Exit(1)
    return database


def _migrate_and_bootstrap() -> None:
    from dispatcher.cli.audit import migrate_and_bootstrap

    migrate_and_bootstrap(get_settings())


app.command("receipts")(receipts)  # defined with the other read-back commands


def main() -> None:
    app()


if __name__ == "__main__":
    main()
