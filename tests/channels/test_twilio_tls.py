"""SMS to Twilio over TLS, as in production: the transport verifies the provider's certificate
against the CA bundle (the environment's REQUESTS_CA_BUNDLE, else certifi's), and a certificate it
cannot verify is a failed send, never an unverified one. The sandbox speaks plain HTTP, so this
runs a small HTTPS server on loopback with a certificate made for the test."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from channels.base import Failure
from channels.sms.adapter import SmsChannel
from config.settings import Settings

from .helpers import recipients, sms_variant


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    loopback = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(loopback, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "twilio.pem", folder / "twilio.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def https_twilio(tmp_path: Path) -> Iterator[tuple[str, Path, list[dict[str, Any]]]]:
    """An HTTPS server answering Messages.json as Twilio does: its URL, its certificate, and the
    requests it received."""
    cert_path, key_path = _certificate(tmp_path)
    received: list[dict[str, Any]] = []

    class Twilio(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            received.append({"path": self.path, "form": form, "auth": self.headers.get("Authorization")})
            body = json.dumps({"sid": "SM" + "a" * 32, "status": "queued", "to": form.get("To")}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Twilio)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert_path, received
    server.shutdown()
    server.server_close()


def test_a_message_goes_over_verified_tls(
    https_twilio: tuple[str, Path, list[dict[str, Any]]],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, cert, received = https_twilio
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # read when the client is built
    channel = SmsChannel(make_settings(twilio_base_url=url))
    [outcome] = channel.send(sms_variant(), recipients(["+14155550001"]))
    assert outcome.accepted and outcome.provider_message_id == "SM" + "a" * 32
    [request] = received
    assert request["path"].endswith("/Messages.json")
    assert request["form"]["To"] == "+14155550001" and request["form"]["Body"] == sms_variant().text
    assert request["auth"].startswith("Basic ")


def test_a_certificate_it_cannot_verify_fails_the_send(
    https_twilio: tuple[str, Path, list[dict[str, Any]]],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _, received = https_twilio
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    channel = SmsChannel(make_settings(twilio_base_url=url))
    [outcome] = channel.send(sms_variant(), recipients(["+14155550001"]))
    assert (outcome.failure, outcome.code) == (Failure.RETRYABLE, "connection")
    assert "CERTIFICATE_VERIFY_FAILED" in (outcome.error or "")
    assert received == []  # refused at the handshake: nothing was sent unverified
