"""`outage-dispatcher suppressions list|remove`: the suppression list, through the API (admin key)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

import typer

from dispatcher import client

suppressions_app = typer.Typer(no_args_is_help=True, help="The suppression list (through the API).")

Url = Annotated[str, typer.Option("--url", envvar="DISPATCHER_URL", help="the API")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="DISPATCHER_API_KEY", show_default=False)]
DEFAULT_URL = "http://127.0.0.1:8000"


@suppressions_app.command("list")
def list_suppressions(
    channel: Annotated[str | None, typer.Option(help="email, sms, chat or webhook")] = None,
    address: Annotated[str | None, typer.Option(help="one address")] = None,
    reason: Annotated[
        str | None, typer.Option(help="bounce, spam_report, dropped, invalid_number...")
    ] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Print every matching entry (all pages) as JSON."""
    filters = {k: v for k, v in {"channel": channel, "address": address, "reason": reason}.items() if v}
    entries: list[object] = []
    cursor: str | None = None
    while True:
        query = urlencode({**filters, "limit": 1000, **({"cursor": cursor} if cursor else {})})
        page = client.call(url, api_key, "GET", f"/v1/suppressions?{query}")
        entries += page["suppressions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    client.emit({"suppressions": entries})


@suppressions_app.command("remove")
def remove_suppression(
    suppression_id: Annotated[int, typer.Argument(help="the entry's id, from `list`")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Remove one entry: the address is sent to again."""
    client.call(url, api_key, "DELETE", f"/v1/suppressions/{suppression_id}")
    typer.echo(f"suppression {suppression_id} removed")
