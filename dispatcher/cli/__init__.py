"""The terminal: `outage-dispatcher` (the console script is `dispatcher.cli:main`).

`commands` holds the root app and the service and management commands; the sub-apps and helpers
are one noun each: `client` (HTTP calls and the error line), `format` (what it prints for people),
`watch` (live progress), `reads` (receipts and lists), `maintenance`, `suppressions`, `audit` (the
audit entries of its direct database writes), `up` (the whole service in one command).
"""

from dispatcher.cli.commands import app, main

__all__ = ["app", "main"]
