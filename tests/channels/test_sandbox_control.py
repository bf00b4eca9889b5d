"""The sandbox's Slack, X and webhook endpoints, its control API, stats and faults."""

from __future__ import annotations

import httpx

from channels.sandbox import SandboxServer

SLACK = {"Authorization": "Bearer xoxb-test"}
X_AUTH = {"Authorization": 'OAuth oauth_consumer_key="k"'}


def test_slack_posts_bad_channels_and_per_channel_rate_limit(sandbox: SandboxServer) -> None:
    url = f"{sandbox.url}/api/chat.postMessage"
    response = httpx.post(url, json={"channel": "C1", "text": "hi"}, headers=SLACK)
    assert response.json()["ok"] is True and response.json()["channel"] == "C1"
    assert httpx.post(url, json={"channel": "C1", "text": "hi"}).json()["error"] == "not_authed"

    sandbox.set_faults("slack", bad_channels=["CBAD"], rate_limit_per_s=1)
    assert httpx.post(url, json={"channel": "CBAD", "text": "x"}, headers=SLACK).json() == {
        "ok": False,
        "error": "channel_not_found",
    }
    assert httpx.post(url, data={"channel": "C2", "text": "x"}, headers=SLACK).status_code == 200
    limited = httpx.post(url, data={"channel": "C2", "text": "again"}, headers=SLACK)
    assert limited.status_code == 429
    assert limited.json()["error"] == "ratelimited"
    assert int(limited.headers["Retry-After"]) >= 1
    # the limit is per channel: another channel still gets through
    assert httpx.post(url, json={"channel": "C3", "text": "x"}, headers=SLACK).json()["ok"] is True
    stats = httpx.get(f"{sandbox.url}/sandbox/stats").json()["slack"]
    assert stats["max_per_1s_by_channel"]["C2"] == 2
    assert stats["accepted"] >= 3 and stats["faults"] == 1


def test_x_duplicates_and_overlong_posts(sandbox: SandboxServer) -> None:
    url = f"{sandbox.url}/2/tweets"
    created = httpx.post(url, json={"text": "API down"}, headers=X_AUTH)
    assert created.status_code == 201
    assert created.json()["data"]["text"] == "API down"
    duplicate = httpx.post(url, json={"text": "API down"}, headers=X_AUTH)
    assert duplicate.status_code == 403
    assert "duplicate" in duplicate.json()["detail"]
    assert httpx.post(url, json={"text": "x" * 281}, headers=X_AUTH).status_code == 400
    # a URL weighs 23 whatever its length
    assert (
        httpx.post(url, json={"text": "y" * 250 + " https://e.com/" + "z" * 60}, headers=X_AUTH).status_code
        == 201
    )
    assert httpx.post(url, json={"text": "no auth"}).status_code == 401


def test_control_api_faults_messages_and_reset(sandbox: SandboxServer) -> None:
    base = sandbox.url
    assert httpx.put(f"{base}/sandbox/faults/webhook", json={"error_rate": 1.0}).status_code == 200
    assert httpx.put(f"{base}/sandbox/faults/webhook", json={"bogus": 1}).status_code == 400
    assert httpx.put(f"{base}/sandbox/faults/nope", json={}).status_code == 400
    assert httpx.post(f"{base}/hooks/a", json={"n": 1}).status_code == 503
    assert httpx.delete(f"{base}/sandbox/faults").status_code == 204
    assert (
        httpx.post(f"{base}/hooks/a", json={"n": 2}, headers={"X-Dispatcher-Delivery": "9"}).status_code
        == 200
    )

    [record] = httpx.get(f"{base}/sandbox/messages", params={"channel": "webhook"}).json()
    assert record["recipient"] == "a" and record["body"] == {"n": 2} and record["delivery_id"] == "9"
    assert isinstance(record["received_at"], float)
    assert httpx.get(f"{base}/sandbox/messages", params={"channel": "sms"}).json() == []
    assert httpx.delete(f"{base}/sandbox/messages").status_code == 204
    assert httpx.get(f"{base}/sandbox/messages").json() == []

    assert httpx.put(f"{base}/sandbox/config", json={"event_webhook_url": "http://x/y"}).status_code == 200
    assert sandbox.event_webhook_url == "http://x/y"


def test_faults_are_deterministic_with_a_seed(sandbox: SandboxServer) -> None:
    def run() -> list[int]:
        sandbox.set_faults("webhook", error_rate=0.5, seed=7)
        return [httpx.post(f"{sandbox.url}/hooks/s", json={}).status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert set(first) == {200, 503}
