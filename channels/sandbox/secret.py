"""The sandbox's per-run secret: the only credential its webhooks are trusted with.

One random value, made by whoever starts the sandbox (`up`, the tests, the benchmarks) and handed
to the sandbox and the service in the environment (DISPATCHER_SANDBOX_SECRET), never in the code:
- Twilio: it is the sandbox account's auth token, so the sandbox signs status callbacks with it
  and the service verifies them with it;
- SendGrid: the Event Webhook signing key is derived from it, so both sides know the key pair
  without it ever being fetched (or forged with a key pair everyone has).
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SECRET_ENV = "DISPATCHER_SANDBOX_SECRET"
# Names the adapters present to the sandbox; not secrets. Its Twilio auth token and SendGrid key
# are the per-run secret, which also signs its status webhooks.
SANDBOX_TWILIO_ACCOUNT_SID = "AC" + "0" * 32
SANDBOX_SLACK_TOKEN = "xoxb-sandbox"
SANDBOX_X_CREDENTIAL = "sandbox"
# the order of P-256's base point: a private scalar must lie in [1, n - 1]
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def event_webhook_key(secret: str) -> ec.EllipticCurvePrivateKey:
    """The SendGrid Event Webhook signing key for this secret (deterministic, domain-separated)."""
    digest = hashlib.sha256(
        b"outage-dispatcher sandbox sendgrid event webhook\x00" + secret.encode()
    ).digest()
    scalar = int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def event_webhook_public_key(secret: str) -> str:
    """Its verification key as SendGrid shows one: base64 DER SubjectPublicKeyInfo."""
    der = (
        event_webhook_key(secret)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode("ascii")
