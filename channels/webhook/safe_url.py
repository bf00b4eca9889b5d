"""Outgoing webhook URLs we are willing to POST signed payloads to.

An admin (and soon a subscriber) chooses the URL, so without a check the service can be aimed at
itself, at the machine's loopback services or at a cloud metadata endpoint (169.254.169.254). A URL
must be https (http only when `webhook_allow_http`), and every address its host resolves to must be
a public one: loopback, private, link-local, carrier-grade NAT, multicast, reserved and unspecified
addresses are refused, IPv4-mapped IPv6 and numeric spellings (`2130706433`) included, because the
check runs on what the resolver returns. Hosts named in `webhook_allowed_hosts` (the sandbox, in
development) skip the address check. It runs on save and again before each send; redirects are
never followed (a 3xx is a failed delivery), so a redirect cannot lead anywhere unchecked.

A check before the send still leaves the HTTP client to resolve the host again, and a host whose
DNS answers change between the two (rebinding) would be reached on an address nobody checked:
`CheckedConnections` makes the check at connect time, on the addresses it then connects to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import urlsplit

import httpcore

from config import Settings

Resolver = Callable[[str, int], Sequence[str]]


class UnsafeUrl(ValueError):
    """Why a webhook URL is refused, in words an admin can act on."""


def resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def refused_address(address: str) -> str | None:
    """Why this IP may not be a webhook target, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for label, test in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local (cloud metadata lives here)", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
    ):
        if test:
            return f"{address} is a {label} address"
    return None if ip.is_global else f"{address} is not a public address"


def check(url: str, settings: Settings, resolver: Resolver = resolve) -> None:
    """Raises UnsafeUrl when `url` may not receive webhooks."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and settings.webhook_allow_http):
        allowed = (
            "https or http"
            if settings.webhook_allow_http
            else "https (http is off: DISPATCHER_WEBHOOK_ALLOW_HTTP)"
        )
        raise UnsafeUrl(f"the scheme must be {allowed}, not '{scheme or 'none'}'")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeUrl("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL may not carry a user name or password")
    if host in {h.lower() for h in settings.webhook_allowed_hosts}:
        return
    public_addresses(host, port or (443 if scheme == "https" else 80), resolver)


def public_addresses(host: str, port: int, resolver: Resolver = resolve) -> list[str]:
    """What `host` resolves to, every address public; else UnsafeUrl saying why not."""
    try:
        addresses = list(resolver(host, port))
    except (OSError, UnicodeError):
        raise UnsafeUrl(f"the host '{host}' does not resolve") from None
    if not addresses:
        raise UnsafeUrl(f"the host '{host}' does not resolve")
    for address in addresses:
        reason = refused_address(address)
        if reason:
            raise UnsafeUrl(f"the host '{host}' is refused: {reason}")
    return addresses


def problem(url: str | None, settings: Settings, resolver: Resolver = resolve) -> str | None:
    """`check` as a message for the field at fault (None: fine, or no URL)."""
    if url is None:
        return None
    try:
        check(url, settings, resolver)
    except UnsafeUrl as exc:
        return str(exc)
    return None


class RefusedAddress(httpcore.ConnectError):
    """A connection refused before it was made: its host does not resolve, or resolves to an
    address webhooks may not reach."""


class CheckedConnections(httpcore.SyncBackend):
    """httpcore's network backend with the address rule at connect time: the host is resolved once,
    every address is checked, and the connection goes to a checked address (TLS still verifies the
    host name). The allowed hosts (the sandbox) connect as they are."""

    def __init__(self, settings: Settings, resolver: Resolver | None = None) -> None:
        self.allowed = {h.lower() for h in settings.webhook_allowed_hosts}
        self.resolver = resolver or resolve

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if host.rstrip(".").lower() in self.allowed:
            return super().connect_tcp(host, port, timeout, local_address, socket_options)
        try:
            addresses = public_addresses(host, port, self.resolver)
        except UnsafeUrl as exc:
            raise RefusedAddress(str(exc)) from None
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure


def refused_connection(exc: BaseException) -> str | None:
    """The reason when an HTTP client error is `CheckedConnections` refusing the address."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RefusedAddress):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
