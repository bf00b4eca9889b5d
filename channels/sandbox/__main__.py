"""`python -m channels.sandbox --port 8001`: the provider sandbox for the demo and benchmarks."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from channels.sandbox.server import SandboxServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m channels.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--event-webhook-url", help="where SendGrid-style events are POSTed")
    parser.add_argument("--key-pem", type=Path, help="EC P-256 private key (PEM) to sign events with")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    server = SandboxServer(
        args.host,
        args.port,
        event_webhook_url=args.event_webhook_url,
        key_pem=args.key_pem,
        log_level=args.log_level,
    )
    print(f"provider sandbox on http://{args.host}:{args.port}  (SendGrid event key: {server.public_key})")
    server.serve_forever()


if __name__ == "__main__":
    main()
