"""`outage-dispatcher suppressions list|remove`: the suppression list, through the API (admin key)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.table import Table

from dispatcher.cli import client
from dispatcher.cli.format import when
from dispatcher.cli.reads import wide_console

suppressions_app = typer.Typer(no_args_is_help=True, help="The suppression list (through the API).")

Url = Annotated[str, typer.Option("--url", envvar="DISPATCHER_URL", help="the API")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="DISPATCHER_API_KEY", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="print the API's JSON body instead")]
DEFAULT_URL = "http://127.0.0.1:8000"


@suppressions_app.command("list")
def list_suppressions(
    channel: Annotated[str | None, typer.Option(help="email, sms, chat or webhook")] = None,
    address: Annotated[str | None, typer.Option(help="one address")] = None,
    reason: Annotated[
        str | None, typer.Option(help="bounce, spam_report, dropped, invalid_number...")
    ] = None,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Every matching entry (all pages) as a table; `--json`: the API's body with every entry."""
    filters = {k: v for k, v in {"channel": channel, "address": address, "reason": reason}.items() if v}
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = urlencode({**filters, "limit": 1000, **({"cursor": cursor} if cursor else {})})
        page = client.call(url, api_key, "GET", f"/v1/suppressions?{query}")
        entries += page["suppressions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    if client.json_wanted(as_json):
        client.emit({"suppressions": entries, "next_cursor": None})
        return
    table = Table(title=f"{len(entries):,} suppression{'' if len(entries) == 1 else 's'}")
    for column in ("id", "channel", "address", "reason", "detail", "since"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for entry in entries:
        row = [entry["channel"], entry["address"], entry["reason"], entry.get("detail") or ""]
        table.add_row(str(entry["id"]), *row, when(entry["created_at"]))
    wide_console().print(table)


@suppressions_app.command("remove")
def remove_suppression(
    suppression_id: Annotated[int, typer.Argument(help="the entry's id, from `list`")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Remove one entry: the address is sent to again."""
    client.call(url, api_key, "DELETE", f"/v1/suppressions/{suppression_id}")
    typer.echo(f"Suppression {suppression_id} removed: that address is sent to again.")
