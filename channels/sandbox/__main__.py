"""`python -m channels.sandbox --port 8001`: the provider sandbox for the demo and benchmarks.

Its per-run secret comes from the environment (DISPATCHER_SANDBOX_SECRET, as `up` passes it), never
from the command line (visible to every user in `ps`); without one it makes its own, and a service
not given the same secret refuses its status webhooks.
"""

from __future__ import annotations

import argparse
import logging
import os

from channels.sandbox.secret import SECRET_ENV
from channels.sandbox.server import SandboxServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m channels.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--event-webhook-url", help="where SendGrid-style events are POSTed")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    secret = os.environ.get(SECRET_ENV) or None
    server = SandboxServer(
        args.host,
        args.port,
        event_webhook_url=args.event_webhook_url,
        secret=secret,
        log_level=args.log_level,
    )
    source = "from the environment" if secret else f"made here: {SECRET_ENV} unset, webhooks will be refused"
    print(f"provider sandbox on http://{args.host}:{args.port}  (secret {source})")
    server.serve_forever()


if __name__ == "__main__":
    main()
