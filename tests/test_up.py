"""`outage-dispatcher up` on a machine with nothing but the package: starts, answers, stops clean."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_up_starts_everything_answers_and_stops_clean(tmp_path: Path) -> None:
    port, sandbox_port = _free_port(), _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "DISPATCHER_DATA_DIR"}
    }
    env["DISPATCHER_REDIS_PREFIX"] = ""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dispatcher.cli",
            "up",
            "--port",
            str(port),
            "--sandbox-port",
            str(sandbox_port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if lines[-1] == "ready":
                break
        assert "ready" in lines, "\n".join(lines)
        assert any(f"http://127.0.0.1:{port}" in line for line in lines)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        assert (tmp_path / ".dispatcher" / "dispatcher.db").exists()  # state lives in the data dir
        family = _descendants(proc.pid)
        assert len(family) >= 4  # redis, api, worker (+ pool), beat
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    time.sleep(0.5)
    survivors = [pid for pid in family if _alive(pid)]
    assert survivors == [], f"left behind: {survivors}"


@pytest.mark.slow
def test_up_refuses_to_start_on_a_broken_template_and_names_it(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides" / "sms"
    overrides.mkdir(parents=True)
    (overrides / "incident_opened.txt.j2").write_text("{% if %}")
    env = {
        k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "DISPATCHER_DATA_DIR"}
    }
    env["DISPATCHER_TEMPLATES_OVERRIDE_DIR"] = str(tmp_path / "overrides")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dispatcher.cli",
            "up",
            "--port",
            str(_free_port()),
            "--sandbox-port",
            str(_free_port()),
        ],
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
    for pid in sorted(_descendants(root)):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if needle in cmdline and ppid == root:
            return pid
    raise AssertionError(f"no child of up runs {needle!r}")


def _wait_line(lines: list[str], needle: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [line for line in list(lines) if needle in line]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"no line with {needle!r}:\n" + "\n".join(lines))


@pytest.mark.slow
def test_up_restarts_a_dead_redis_and_worker_and_still_sends(tmp_path: Path) -> None:
    """Killing the embedded Redis (and then the worker) neither stops `up` nor the next incident."""
    import threading

    port, sandbox_port = _free_port(), _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "DISPATCHER_DATA_DIR"}
    }
    env |= {
        "DISPATCHER_REDIS_PREFIX": "",
        "DISPATCHER_API_KEYS": f"commander:{COMMANDER},admin:{ADMIN}",
        "DISPATCHER_SWEEP_INTERVAL_S": "2",
    }
    argv = [
        sys.executable,
        "-m",
        "dispatcher.cli",
        "up",
        "--port",
        str(port),
        "--sandbox-port",
        str(sandbox_port),
    ]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True
    )
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_line(lines, "ready", 90)
        put = httpx.put(
            f"{url}/v1/subscribers/s1",
            json={"lists": ["admins"], "email": "s1@example.com"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert put.status_code == 201, put.text
        for needle in ("redis-server", "worker"):
            victim = _pid_of(proc.pid, needle)
            os.kill(victim, signal.SIGKILL)
            name = "redis" if needle == "redis-server" else "worker"
            assert "exited with" in _wait_line(lines, f"{name} exited", 30)
            _wait_line(lines, f"{name} restarted", 60)
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
        family = _descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    time.sleep(0.5)
    assert [pid for pid in family if _alive(pid)] == []
