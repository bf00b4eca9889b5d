"""Twilio's request signature (X-Twilio-Signature), for status callbacks and inbound messages alike.

Twilio HMAC-SHA1s the full URL it called plus the sorted POST parameters with the account's auth
token. The URL is the one Twilio saw: our public URL (we may be behind a proxy), not the one the
server was reached on. A sandboxed Twilio signs with the sandbox's per-run secret (its account's
auth token), never a constant.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator

from channels.base import SignatureMismatch
from channels.clients import header
from channels.sandbox.secret import SECRET_ENV
from config.settings import Settings

SIGNATURE_HEADER = "X-Twilio-Signature"


def auth_token(settings: Settings) -> str:
    """The live account's auth token, else the sandbox's secret (its account's token)."""
    if settings.twilio_account_sid is not None and settings.twilio_auth_token is not None:
        return settings.twilio_auth_token.get_secret_value()
    if settings.sandbox_secret is None:
        raise SignatureMismatch(f"Twilio is sandboxed and {SECRET_ENV} is unset", SIGNATURE_HEADER)
    return settings.sandbox_secret.get_secret_value()


def called_url(settings: Settings, path: str, query: str = "") -> str:
    """The URL Twilio called as it saw it: where providers reach us (`callback_base`) + path + query."""
    return settings.callback_base + path + (f"?{query}" if query else "")


def verified_form(
    settings: Settings, path: str, query: str, body: bytes, headers: Mapping[str, str]
) -> dict[str, str]:
    """The request's form fields, once its signature matches them and the URL Twilio called (`path`
    and `query` as we received them); raises SignatureMismatch otherwise. A body that is not UTF-8
    cannot match and is refused the same way."""
    signature = header(headers, SIGNATURE_HEADER)
    if not signature:
        raise SignatureMismatch(f"missing {SIGNATURE_HEADER}", SIGNATURE_HEADER)
    try:
        params: dict[str, str] | None = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        params = None
    if params is None or not signed(
        RequestValidator(auth_token(settings)), called_url(settings, path, query), params, signature
    ):
        raise SignatureMismatch("the Twilio signature does not match", SIGNATURE_HEADER)
    return params


def signed(validator: RequestValidator, url: str, params: dict[str, str], signature: str) -> bool:
    """Twilio's signature over the URL as we know it, else the SDK's whole check (the URL with and
    without its port, as Twilio's own signing varies). The SDK always computes both, and every SMS
    brings two callbacks: the first HMAC is enough for nearly all of them."""
    if hmac.compare_digest(validator.compute_signature(url, params).encode(), signature.encode()):
        return True
    return bool(validator.validate(url, params, signature))
