"""How the sandbox signs its status webhooks, exactly as the providers do.

Written from the providers' documentation rather than with their SDK helpers, so the tests that
verify with the SDK validators check two independent implementations against each other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


class EventWebhookSigner:
    """SendGrid Event Webhook signing: ECDSA P-256 with SHA-256 over `timestamp + payload`, the
    DER signature base64-encoded; the verification key shown as base64 DER SubjectPublicKeyInfo."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.private_key = private_key or ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key_b64(self) -> str:
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    def sign(self, timestamp: str, payload: bytes) -> str:
        signature = self.private_key.sign(timestamp.encode("utf-8") + payload, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode("ascii")


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature: HMAC-SHA1 (key: the account's auth token) over the full URL followed by
    every POST parameter, sorted by name, as name+value; base64."""
    data = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")
