"""The service's own processes, started as their users start them, for the tests that drive them.

- `Up`: `outage-dispatcher up` as a newcomer runs it: in an empty folder, with none of the test
  run's REDIS_URL, DATABASE_URL or data dir, so `up` starts its own embedded Redis (a private
  server: the empty key prefix is nobody else's) and SQLite file;
- `start_api`: the API alone under uvicorn, on the test's Redis prefix and database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from dispatcher.supervisor import free_port, is_200, wait_http

# A machine running the suite's processes side by side can take long to import the app.
API_START_S = 120

# What the test run sets for itself and a newcomer does not have.
TEST_WORLD = frozenset({"REDIS_URL", "DATABASE_URL", "DISPATCHER_DATA_DIR"})


def newcomer_env(drop: Iterable[str] = (), **extra: str) -> dict[str, str]:
    """This process's environment less the test run's own services (and `drop`), plus `extra`."""
    gone = TEST_WORLD | set(drop)
    return {k: v for k, v in os.environ.items() if k not in gone} | extra


def up_argv(port: int, sandbox_port: int, callback_port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dispatcher.cli",
        "up",
        "--port",
        str(port),
        "--sandbox-port",
        str(sandbox_port),
        "--callback-port",
        str(callback_port),
    ]


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
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


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Up:
    """One `up` process on free ports, its output collected line by line as it comes."""

    def __init__(self, cwd: Path, env: dict[str, str], *, sigint_ignored: bool = False) -> None:
        """With `sigint_ignored`, `up` starts as a script's background job does: SIGINT ignored."""
        self.port, self.sandbox_port, self.callback_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.callback_url = f"http://127.0.0.1:{self.callback_port}"
        self.proc = subprocess.Popen(
            up_argv(self.port, self.sandbox_port, self.callback_port),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        self.lines.extend(line.rstrip("\n") for line in self.proc.stdout)

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, needle: str, timeout_s: float) -> str:
        """The latest output line containing `needle`, once there is one."""
        return self._wait(lambda line: needle in line, timeout_s, f"no line with {needle!r}")

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until `up` prints `ready` on a line of its own."""
        self._wait(lambda line: line == "ready", timeout_s, "no `ready`")

    def _wait(self, match: Callable[[str], bool], timeout_s: float, why: str) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            exited = self.proc.poll() is not None
            if exited:
                time.sleep(0.2)  # the reader may still be draining the last lines
            found = [line for line in list(self.lines) if match(line)]
            if found:
                return found[-1]
            if exited:
                break
            time.sleep(0.1)
        raise AssertionError(f"{why}:\n{self.output()}")

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C or a process manager would, and wait for `up` to exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def start_api(
    env: dict[str, str], log: Path, port: int, factory: str = "dispatcher.app:create_app"
) -> subprocess.Popen[bytes]:
    """The API (`factory` under uvicorn; `dispatcher.app:create_callbacks_app` for the providers'
    door alone) on `port`, once it answers /healthz (the supervisor's readiness check); its output
    goes to `log`, which a start that fails is reported with. In the test run's own process group,
    so a Ctrl-C of the run reaches it too."""
    url = f"http://127.0.0.1:{port}"
    argv = [factory, "--factory", "--port", str(port), "--no-access-log"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *argv], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if wait_http(f"{url}/healthz", API_START_S, [proc], ok=is_200):
        return proc
    proc.terminate()
    proc.wait(timeout=20)
    raise AssertionError(f"the API did not start on {url}: {log.read_text()}")
