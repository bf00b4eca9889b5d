"""The CLI's read-back commands: `receipts BROADCAST`, `incidents list`, `broadcasts list`.

Each follows the API's cursors up to `--limit` and prints a table (rich), or with `--json` the API's
body shape (`{..., "next_cursor"}`) holding every row it read.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dispatcher.cli import client
from dispatcher.cli import format as fmt

incidents_app = typer.Typer(no_args_is_help=True, help="List incidents (through the API).")
broadcasts_app = typer.Typer(no_args_is_help=True, help="List broadcasts (through the API).")

Url = Annotated[str, typer.Option("--url", envvar="DISPATCHER_URL", help="the API")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="DISPATCHER_API_KEY", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="print the API's JSON body instead")]
Limit = Annotated[int, typer.Option(min=1, help="read at most this many rows (following cursors)")]
DEFAULT_URL = "http://127.0.0.1:8000"
PAGE_MAX = 1000  # the API's largest page


def read_pages(
    url: str,
    api_key: str | None,
    path: str,
    key: str,
    params: dict[str, Any],
    limit: int,
    page_size: int = PAGE_MAX,
) -> dict[str, Any]:
    """Pages of `key` rows from `path` until `limit` rows or the last page; the first page's body with
    every row read, and the cursor to go on from (None when nothing is left)."""
    rows: list[Any] = []
    cursor: str | None = None
    body: dict[str, Any] = {}
    while True:
        page_params = {**params, "limit": min(page_size, limit - len(rows)), "cursor": cursor}
        page = client.call(url, api_key, "GET", path, params=page_params)
        body = body or page
        rows += page[key]
        cursor = page.get("next_cursor")
        if cursor is None or len(rows) >= limit:
            break
    return {**body, key: rows, "next_cursor": cursor}


def wide_console() -> Console:
    """The terminal's width on a terminal; elsewhere (a pipe, a log) wide enough not to wrap rows."""
    found = Console()
    return found if found.is_terminal else Console(width=200)


def _print(table: Table, more: str | None) -> None:
    out = wide_console()
    out.print(table)
    if more:
        out.print(f"more rows: raise --limit, or go on with cursor {more}", style="dim", soft_wrap=True)


def receipts(
    broadcast_id: Annotated[int, typer.Argument(metavar="BROADCAST")],
    state: Annotated[str | None, typer.Option(help="pending, sent, delivered, failed, bounced...")] = None,
    channel: Annotated[str | None, typer.Option(help="email, sms, chat, webhook, social")] = None,
    tier: Annotated[int | None, typer.Option(min=0)] = None,
    q: Annotated[str | None, typer.Option("--q", help="a subscriber's external_id or address")] = None,
    limit: Limit = 100,
    page_size: Annotated[int, typer.Option(min=1, max=PAGE_MAX, help="rows per request")] = PAGE_MAX,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """A broadcast's receipts as a table; failed rows show the provider's code and message."""
    params = {"state": state, "channel": channel, "tier": tier, "q": q}
    path = f"/v1/broadcasts/{broadcast_id}/receipts"
    body = read_pages(url, api_key, path, "receipts", params, limit, page_size)
    if client.json_wanted(as_json):
        client.emit(body)
        return
    _print(fmt.receipts_table(body), body["next_cursor"])


@incidents_app.command("list")
def list_incidents(
    status: Annotated[
        str | None, typer.Option(help="investigating, identified, monitoring, resolved")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="incident or maintenance")] = None,
    limit: Limit = 50,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Incidents, newest first."""
    body = read_pages(url, api_key, "/v1/incidents", "incidents", {"status": status, "kind": kind}, limit)
    if client.json_wanted(as_json):
        client.emit(body)
        return
    table = Table(title=f"{fmt.plural(len(body['incidents']), 'incident')}")
    for column in ("id", "kind", "status", "impact", "title", "opened", "resolved"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for i in body["incidents"]:
        table.add_row(
            str(i["id"]), i["kind"], i["status"], i["impact"] or "-", i["title"],
            fmt.when(i["created_at"]), fmt.when(i.get("resolved_at")),
        )  # fmt: skip
    _print(table, body["next_cursor"])


@broadcasts_app.command("list")
def list_broadcasts(
    incident: Annotated[int | None, typer.Option(help="only this incident's broadcasts")] = None,
    state: Annotated[str | None, typer.Option(help="queued, planning, sending, completed")] = None,
    limit: Limit = 50,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Broadcasts, newest first, with their delivery totals."""
    params = {"incident_id": incident, "state": state}
    body = read_pages(url, api_key, "/v1/broadcasts", "broadcasts", params, limit)
    if client.json_wanted(as_json):
        client.emit(body)
        return
    table = Table(title=f"{fmt.plural(len(body['broadcasts']), 'broadcast')}")
    for column in ("id", "incident", "event", "state", "deliveries", "created", "completed"):
        table.add_column(column, justify="right" if column in ("id", "incident", "deliveries") else "left")
    for b in body["broadcasts"]:
        table.add_row(
            str(b["id"]), str(b["incident_id"] or "-"), b.get("event") or "", b["state"],
            fmt.n(b.get("total")), fmt.when(b["created_at"]), fmt.when(b.get("completed_at")),
        )  # fmt: skip
    _print(table, body["next_cursor"])
