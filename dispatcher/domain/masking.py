"""Addresses as a viewer may see them: enough to recognise a recipient, not enough to contact them.

Pure. Dashboards and the API show masked addresses by default; only an audited reveal shows one whole.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DOT = "•"
_HIDDEN = DOT * 3


def mask_email(address: str) -> str:
    """`jane@example.com` -> `j•••@e•••.com`: the first letter of each part and the top-level domain."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return _HIDDEN
    name, dot, tld = domain.rpartition(".")
    if not dot or not name:
        return f"{local[0]}{_HIDDEN}@{_HIDDEN}"
    return f"{local[0]}{_HIDDEN}@{name[0]}{_HIDDEN}.{tld}"


def mask_phone(address: str) -> str:
    """`+447700900189` -> `+44•••••••89`: the country code's first digits and the last two, each
    hidden digit one dot, so the length still tells a UK number from a US one."""
    digits = [c for c in address if c.isdigit()]
    if len(digits) <= 4:
        return DOT * len(digits)
    return "+" + "".join(digits[:2]) + DOT * (len(digits) - 4) + "".join(digits[-2:])


def mask_url(address: str) -> str:
    """`https://hooks.example.com/T0/secret` -> `https://hooks.example.com/•••`: the path and query of
    a webhook URL are often its credential."""
    parts = urlsplit(address)
    if not parts.scheme or not parts.hostname:
        return _HIDDEN
    port = f":{parts.port}" if parts.port else ""
    rest = f"/{_HIDDEN}" if (parts.path.strip("/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{parts.hostname}{port}{rest}"


def mask_chat(address: str) -> str:
    """A Slack channel (`#payments-acme`, `C0123ABC`) or a URL: names can tell whose channel it is."""
    if "://" in address:
        return mask_url(address)
    sign = "#" if address.startswith("#") else ""
    name = address.removeprefix("#")
    return f"{sign}{name[:1]}{_HIDDEN}" if name else _HIDDEN


def mask_address(channel: str, address: str) -> str:
    """The masked form of `address` on `channel`; the public social account is no secret."""
    if channel == "email":
        return mask_email(address)
    if channel == "sms":
        return mask_phone(address)
    if channel == "webhook":
        return mask_url(address)
    if channel == "chat":
        return mask_chat(address)
    if channel == "social":
        return address
    return _HIDDEN


def mask_within(text: str | None, channel: str, address: str) -> str | None:
    """`text` (a provider's error message) with the recipient's address masked wherever it appears:
    Twilio's 21211 says "Invalid 'To' Phone Number: +14155550123", which would show a viewer the
    number the receipt masks. Matched in any case, and for a phone also without its `+`."""
    if not text or not address or channel == "social":
        return text
    masked = mask_address(channel, address)
    forms = [address] + ([address.removeprefix("+")] if channel == "sms" and address.startswith("+") else [])
    for form in forms:
        start = text.lower().find(form.lower())
        while start != -1:
            text = text[:start] + masked + text[start + len(form) :]
            start = text.lower().find(form.lower(), start + len(masked))
    return text
