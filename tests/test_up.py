"""`outage-dispatcher up` on a machine with nothing but the package: starts, answers, stops clean."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.processes import Up, alive, descendants, newcomer_env, up_argv


@pytest.mark.slow
def test_up_starts_everything_answers_and_stops_clean(tmp_path: Path) -> None:
    up = Up(tmp_path, newcomer_env(DISPATCHER_REDIS_PREFIX=""))
    port = up.port
    try:
        up.wait_ready(90)
        lines = up.lines
        assert any(f"http://127.0.0.1:{port}" in line for line in lines)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        assert (tmp_path / ".dispatcher" / "dispatcher.db").exists()  # state lives in the data dir
        family = descendants(up.proc.pid)
        assert len(family) >= 4  # redis, api, worker (+ pool), beat
    finally:
        up.stop()
    time.sleep(0.5)
    survivors = [pid for pid in family if alive(pid)]
    assert survivors == [], f"left behind: {survivors}"


@pytest.mark.slow
def test_up_stops_on_sigint_even_when_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A background job of a script inherits SIGINT as ignored; `kill -INT` (Ctrl-C) must still stop
    `up` and everything it started."""
    up = Up(tmp_path, newcomer_env(DISPATCHER_REDIS_PREFIX=""), sigint_ignored=True)
    try:
        up.wait_ready(90)
        family = descendants(up.proc.pid)
        assert family, up.output()
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=60) == 0, up.output()
    finally:
        up.stop()
    time.sleep(0.5)
    assert [pid for pid in family if alive(pid)] == []


@pytest.mark.slow
def test_up_refuses_to_start_on_a_broken_template_and_names_it(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides" / "sms"
    overrides.mkdir(parents=True)
    (overrides / "incident_opened.txt.j2").write_text("{% if %}")
    env = newcomer_env(DISPATCHER_TEMPLATES_OVERRIDE_DIR=str(tmp_path / "overrides"))
    proc = subprocess.run(
        up_argv(free_port(), free_port(), free_port()),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot start" in proc.stderr and "incident_opened" in proc.stderr
    assert "ready" not in proc.stdout.splitlines()


COMMANDER = "od_commander-up-restart-0123456789abcdef"
ADMIN = "od_admin-up-restart-0123456789abcdefghij"


def _pid_of(root: int, needle: str) -> int:
    """The child of `up` whose command line contains `needle` (the main process, not a pool child)."""
    for pid in sorted(descendants(root)):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if needle in cmdline and ppid == root:
            return pid
    raise AssertionError(f"no child of up runs {needle!r}")


@pytest.mark.slow
def test_up_restarts_a_dead_redis_and_worker_and_still_sends(tmp_path: Path) -> None:
    """Killing the embedded Redis (then the worker pool, then the urgent lane) neither stops `up` nor
    the next incident."""
    env = newcomer_env(
        DISPATCHER_REDIS_PREFIX="",
        DISPATCHER_API_KEYS=f"commander:{COMMANDER},admin:{ADMIN}",
        DISPATCHER_SWEEP_INTERVAL_S="2",
    )
    up = Up(tmp_path, env)
    proc, lines, url = up.proc, up.lines, up.url
    try:
        up.wait_line("ready", 90)
        put = httpx.put(
            f"{url}/v1/subscribers/s1",
            json={"lists": ["admins"], "email": "s1@example.com"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert put.status_code == 201, put.text
        # the pool (every queue), then the urgent lane (only `urgent`)
        children = {"redis-server": "redis", "worker -Q urgent,": "worker", "-Q urgent -c": "worker-urgent"}
        for needle, name in children.items():
            victim = _pid_of(proc.pid, needle)
            os.kill(victim, signal.SIGKILL)
            assert "exited with" in up.wait_line(f"{name} exited", 30)
            up.wait_line(f"{name} restarted", 60)
            assert proc.poll() is None, "\n".join(lines)
        created = httpx.post(
            f"{url}/v1/incidents",
            json={"title": "Checkout is failing", "impact": "major", "channels": ["email"]},
            headers={"Authorization": f"Bearer {COMMANDER}"},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        broadcast_id = created.json()["broadcast"]["id"]
        deadline = time.monotonic() + 120
        state: dict[str, object] = {}
        while time.monotonic() < deadline:
            state = httpx.get(
                f"{url}/v1/broadcasts/{broadcast_id}", headers={"Authorization": f"Bearer {COMMANDER}"}
            ).json()
            if state.get("state") == "completed":
                break
            time.sleep(0.5)
        assert state.get("state") == "completed", (state, "\n".join(lines))
        totals = state["totals"]
        assert totals["sent"] + totals["delivered"] == 1, totals  # type: ignore[index]
        family = descendants(proc.pid)
    finally:
        up.stop()
    time.sleep(0.5)
    assert [pid for pid in family if alive(pid)] == []
