"""Audit entries for the CLI commands that write to the database directly (keys, migrations):
actor `cli`, the operating-system user and host as the client, the status an equivalent HTTP call
would answer (201 created, 200 done, 404 nothing to act on). Written in the command's own
transaction where there is one, so the change and its entry commit together."""

from __future__ import annotations

import getpass
import socket
import uuid

from sqlalchemy.orm import Session

from config import Settings
from dispatcher.auth import bootstrap_keys
from dispatcher.store.audit import CLI_ACTOR, record_audit
from dispatcher.store.db import Database, get_database
from dispatcher.store.migrate import upgrade


def _client() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = "?"
    return f"{user}@{socket.gethostname()}"


def audit_cli(session: Session, action: str, target: str | None, status: int) -> None:
    record_audit(
        session,
        actor=CLI_ACTOR,
        role=None,
        action=action,
        target=target,
        status=status,
        client=_client(),
        request_id=uuid.uuid4().hex,
    )


def migrate_and_bootstrap(settings: Settings) -> Database:
    """The schema brought to head and DISPATCHER_API_KEYS added, each added key audited as the CLI's
    write: what `web` and `up` both do before they serve."""
    database = get_database(settings)
    upgrade(database)
    if settings.api_keys:
        with database.session() as session:
            added = bootstrap_keys(session, settings.api_keys.get_secret_value())
            if added:
                audit_cli(session, "keys.bootstrap", f"{added} keys from DISPATCHER_API_KEYS", 201)
    return database
