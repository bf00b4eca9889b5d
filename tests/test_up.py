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
