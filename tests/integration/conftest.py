"""Real RabbitMQ, Redis and PostgreSQL, with the platform's own processes.

``scripts/test`` starts the services and exports ``CELERY_BROKER_URL`` and
``DATABASE_URL``; these fixtures start one worker per context and the relay
as separate processes against pytest-django's test database, on the session's
RabbitMQ or on another broker (``platforms.on(url)``: a private redis-server,
``redis_server``, or a Redis Sentinel group, ``sentinel_group``).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from messaging import brokers
from messaging.brokers.base import Broker
from messaging.topology import Topology
from tests.integration.platform_bus import PlatformBus
from tests.integration.redis import MASTER_NAME, RedisServer, SentinelGroup

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def real_services():
    """Fail loudly, never skip, when the real services are not configured."""
    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("amqp://"):
        pytest.fail(
            "integration tests need RabbitMQ and PostgreSQL: run them with scripts/test "
            f"(database: {connection.vendor}, broker: {settings.CELERY_BROKER_URL.split('://')[0]})"
        )


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _purge_bus_queues(broker: Broker) -> None:
    """Declare the topology on ``broker`` and empty its queues: earlier runs must not leak in."""
    with broker.connection() as connection:
        channel = connection.default_channel
        topology = Topology(broker=broker)
        topology.declare(channel)
        for queue in topology.queues():
            queue(channel).purge()


class PlatformProcesses(dict):
    """The platform's processes by name; a test may kill one outright and start it again."""

    def __init__(self, commands: dict[str, list[str]], env: dict, logs: Path) -> None:
        super().__init__()
        self.commands, self.env, self.logs, self.starts = commands, env, logs, 0
        #: The folder a process runs in, if not this checkout: another release's code.
        self.folders: dict[str, Path] = {}

    @property
    def broker(self) -> Broker:
        """The adapter of the broker the processes run on."""
        return brokers.for_url(self.env["CELERY_BROKER_URL"])

    def start(self, name: str) -> None:
        self.starts += 1
        log_path = self.logs / f"{name}-{self.starts}.log"
        with open(log_path, "w") as log:
            self[name] = subprocess.Popen(self.commands[name], cwd=self.folders.get(name, ROOT), env=self.env, stdout=log,
                                          stderr=subprocess.STDOUT)
        self[name].log_path = log_path

    def children(self, name: str) -> list[int]:
        """The process ids of a worker's pool processes."""
        out = subprocess.run(["pgrep", "-P", str(self[name].pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def kill(self, name: str) -> None:
        """SIGKILL the process and its pool children: nothing gets to clean up."""
        children = self.children(name)
        self[name].kill()
        self[name].wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    @contextlib.contextmanager
    def frozen(self, *names: str):
        """SIGSTOP the processes and their pool children, SIGCONT on leaving: they hold
        what they have and take nothing more meanwhile."""
        pids = [pid for name in names for pid in (self[name].pid, *self.children(name))]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def wait_until_ready(self, names, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in pending:
                if self[name].poll() is not None:
                    pytest.fail(f"{name} exited at start-up:\n{self[name].log_path.read_text()[-3000:]}")
            pending = {name for name in pending if " ready." not in self[name].log_path.read_text()}
            time.sleep(0.3)
        if pending:
            pytest.fail(f"not ready after {timeout}s: {sorted(pending)}")

    def stop_all(self) -> None:
        for process in self.values():
            process.send_signal(signal.SIGTERM)
        for process in self.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _platform_env(**overrides: str) -> dict[str, str]:
    """The environment the platform's processes run in: the tests' services and database."""
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        # Long on purpose: flows complete quickly only if the on-commit nudge works.
        "BUS_RELAY_POLL_INTERVAL": "30",
        # Retries a few seconds apart: long enough for a test to act between them.
        "BUS_RETRY_BACKOFF": "0.5",
        "BUS_RETRY_BACKOFF_MAX": "2",
        # Short, so that a database outage in a test outlasts it: the message then
        # waits on the broker too, not only in the worker.
        "BUS_DATABASE_WAIT": "5",
        # A blocked or hung broker shows as a confirm timeout within seconds.
        "BUS_CONFIRM_TIMEOUT": "5",
        **overrides,
    }


def _platform_commands() -> dict[str, list[str]]:
    """One worker per context and the relay, by process name."""
    commands = {f"worker-{c}": [sys.executable, "-m", "workers", c, "--concurrency=2", "--without-gossip",
                                "--without-mingle"]
                for c in ("catalog", "basket", "ordering", "payment")}
    commands["relay"] = [sys.executable, "manage.py", "relay"]
    return commands


class Platforms:
    """The platform's processes on one broker at a time: two relays on the test
    database would share its outbox between two brokers."""

    def __init__(self, logs) -> None:
        self.logs = logs
        self.running: PlatformProcesses | None = None
        #: What the running processes were started with (the whole environment differs
        #: from test to test: pytest names the current test in it).
        self.running_on: dict[str, str] | None = None

    def on(self, broker_url: str, **env: str) -> PlatformProcesses:
        """One worker per context and the relay on ``broker_url``, in the test environment
        with ``env`` over it; started (the others stopped first) unless they run already."""
        wanted = {"CELERY_BROKER_URL": broker_url, **env}
        if self.running is None or self.running_on != wanted:
            self.stop()
            processes = PlatformProcesses(_platform_commands(), _platform_env(**wanted), self.logs.mktemp("process-logs"))
            _purge_bus_queues(processes.broker)
            for name in processes.commands:
                processes.start(name)
            processes.wait_until_ready([name for name in processes.commands if name.startswith("worker-")])
            self.running, self.running_on = processes, wanted
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop_all()
            self.running = None


@pytest.fixture(scope="session")
def platforms(real_services, django_db_setup, tmp_path_factory):
    """Starts the platform's processes on a broker (``platforms.on(url)``); stops them
    at the end of the session, before the test database goes."""
    platforms = Platforms(tmp_path_factory)
    yield platforms
    platforms.stop()


@pytest.fixture
def platform_processes(platforms):
    """One worker per context and the relay on the session's RabbitMQ, each its own
    process: started for the first test that needs them, and kept running."""
    return platforms.on(settings.CELERY_BROKER_URL)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server of the session's own (never the machine's), on a free port."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sentinel_group(tmp_path, settings):
    """A Redis primary, its replica and three sentinels of the test's own (a failover changes
    which is primary: one group per test); this process's bus told the primary's name."""
    group = SentinelGroup(tmp_path / "sentinel-group")
    group.start()
    settings.BUS_REDIS_SENTINEL_MASTER = MASTER_NAME
    yield group
    group.stop()


@pytest.fixture
def start_platform(real_services, django_db_setup, tmp_path_factory):
    """Start some of the platform's processes in an environment of the test's
    (another broker, say): ``start_platform(["relay"], CELERY_BROKER_URL=...)``.
    Stopped after the test."""
    started = []

    def start(names: list[str], **env: str) -> PlatformProcesses:
        processes = PlatformProcesses(_platform_commands(), _platform_env(**env), tmp_path_factory.mktemp("process-logs"))
        started.append(processes)
        for name in names:
            processes.start(name)
        return processes

    yield start
    for processes in started:
        processes.stop_all()


@pytest.fixture
def bus(platform_processes, transactional_db):
    """The running platform; each test's data is committed so other processes see it."""
    yield platform_processes
    # Tables are emptied after each test: let the workers finish first, or
    # the TRUNCATE deadlocks with a handler still writing. (Rows scheduled for
    # later, a checkout's deadline say, wait on; the next test's flush removes them.)
    PlatformBus(platform_processes).run_until_quiet()
