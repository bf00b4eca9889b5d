"""The sandbox's stats of its own status webhooks, which the benchmarks read: each answered POST is
timed, and non-2xx answers and POSTs without an answer are counted apart (real sandbox, real HTTP)."""

from __future__ import annotations

import os

import httpx

from channels.sandbox import SandboxServer
from dispatcher.supervisor import free_port

SID = "AC" + "1" * 32
TOKEN = os.environ["DISPATCHER_SANDBOX_SECRET"]


def send_sms(sandbox: SandboxServer, callback: str, to: str = "+14155550100") -> None:
    response = httpx.post(
        f"{sandbox.url}/2010-04-01/Accounts/{SID}/Messages.json",
        data={"To": to, "From": "+15005550006", "Body": "API down", "StatusCallback": callback},
        auth=(SID, TOKEN),
    )
    assert response.status_code == 201


def test_answered_callbacks_are_timed(sandbox: SandboxServer) -> None:
    sandbox.set_faults("webhook", latency_ms=50)  # the receiver takes at least 50 ms to answer
    for to in ("+14155550100", "+14155550101"):
        send_sms(sandbox, f"{sandbox.url}/hooks/twilio", to)
    sandbox.drain_callbacks()
    twilio = sandbox.stats()["twilio"]
    assert twilio["callbacks_sent"] == 4 and twilio["callbacks_failed"] == 0
    stats = twilio["callbacks"]
    assert (stats["non_2xx"], stats["errors"]) == (0, 0)
    latency = stats["latency_ms"]
    assert latency["n"] == 4
    assert 50 <= latency["p50"] <= latency["p99"] <= latency["max"]
    assert stats["lag_ms"]["n"] == 4 and stats["lag_ms"]["max"] >= latency["max"]
    assert stats["first_at"] <= stats["last_at"] and stats["max_per_1s"] >= 1
    assert stats["reports"] == 4  # one status per Twilio callback


def test_refused_and_unanswered_callbacks_are_counted_apart(sandbox: SandboxServer) -> None:
    sandbox.set_faults("webhook", error_rate=1.0, error_status=503)
    send_sms(sandbox, f"{sandbox.url}/hooks/twilio")
    send_sms(sandbox, f"http://127.0.0.1:{free_port()}/nobody-listens", "+14155550101")
    sandbox.drain_callbacks()
    twilio = sandbox.stats()["twilio"]
    assert (twilio["callbacks_sent"], twilio["callbacks_failed"]) == (0, 4)
    stats = twilio["callbacks"]
    assert (stats["non_2xx"], stats["errors"]) == (2, 2)
    assert stats["latency_ms"]["n"] == 2  # only answered POSTs have a latency


def test_a_fresh_run_forgets_them(sandbox: SandboxServer) -> None:
    send_sms(sandbox, f"{sandbox.url}/hooks/twilio")
    sandbox.drain_callbacks()
    assert "callbacks" in sandbox.stats()["twilio"]
    sandbox.clear_messages()
    assert "callbacks" not in sandbox.stats()["twilio"]
