"""``manage.py run_platform`` started as an operator starts it, on RabbitMQ and
PostgreSQL of its own: every context worker, the relay, the web admin and Flower
as real processes. It is serving once the admin answers, the relay publishes and
Flower knows every worker; it is stopped with every process it started, or the
stop says which were left behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from console.management.commands.run_platform import ADMIN_USERNAME

ROOT = Path(__file__).resolve().parents[2]
#: The contexts whose workers run_platform starts (one each).
CONTEXTS = {"basket", "catalog", "ordering", "payment"}
#: Seconds the whole platform gets to come up: migrations on a fresh database, four
#: workers, the relay, runserver and Flower, on two noisy cores.
START_TIMEOUT = 150
#: Seconds run_platform gets to stop its processes after SIGTERM (it gives each 15).
STOP_TIMEOUT = 60


class LivePlatform:
    """One ``run_platform`` process and what it started; logins known before it starts."""

    def __init__(self, *, broker_url: str, database_url: str, workdir: Path, log_path: Path) -> None:
        self.admin_username = ADMIN_USERNAME  # the login run_platform creates on its first run
        self.admin_password = secrets.token_urlsafe(12)
        self.flower_username, self.flower_password = "watcher", secrets.token_urlsafe(12)
        web_port, flower_port = _free_port(), _free_port()
        self.admin_url = f"http://127.0.0.1:{web_port}"
        self.flower_url = f"http://127.0.0.1:{flower_port}"
        self.log_path = log_path
        self._argv = [sys.executable, "manage.py", "run_platform", f"--web-port={web_port}",
                      f"--flower-port={flower_port}"]
        self.env = {
            # pytest-django exports the test settings; run_platform's own default is the operator's.
            **{name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"},
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "CELERY_BROKER_URL": broker_url,
            "DATABASE_URL": database_url,
            "BUS_DATA_DIR": str(workdir),
            # Read by run_platform when it creates the admin user on the first run.
            "DJANGO_SUPERUSER_PASSWORD": self.admin_password,
            "FLOWER_BASIC_AUTH": f"{self.flower_username}:{self.flower_password}",
            # A failing handler is dead-lettered within seconds, not after minutes of backoff.
            "BUS_MAX_RETRIES": "2",
            "BUS_RETRY_BACKOFF": "0.5",
            "BUS_RETRY_BACKOFF_MAX": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self._process: subprocess.Popen | None = None
        self._started: dict[int, str] = {}

    def start(self) -> None:
        with open(self.log_path, "w") as log:
            self._process = subprocess.Popen(self._argv, cwd=ROOT, env=self.env, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_serving(self) -> None:
        """Return once every process answers; fail with what is missing and the log's end if one never does."""
        deadline = time.monotonic() + START_TIMEOUT
        steps = {
            "every worker to say it is ready": lambda: self.log_text().count(" ready.") >= len(CONTEXTS),
            "the relay to publish": lambda: "relay: publishing" in self.log_text(),
            "the admin's login page": lambda: http_get(f"{self.admin_url}/admin/login/")[0] == 200,
            "Flower to know a worker of every context": lambda: {
                name.split(".")[0] for name in self.flower_workers()} == CONTEXTS,
        }
        for waiting_for, ready in steps.items():
            while not ready():
                if self._process.poll() is not None:
                    pytest.fail(f"run_platform exited with code {self._process.returncode}:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"run_platform not serving after {START_TIMEOUT}s: waiting for {waiting_for} "
                                f"(Flower knows {sorted(self.flower_workers())})\n{self.log_tail()}")
                time.sleep(1)
        # Pool processes included: each must be gone after the stop.
        self._started = _descendants(self._process.pid)

    def flower_workers(self) -> list[str]:
        """The workers Flower knows, by name; none while it does not answer."""
        # refresh=1: Flower asks the workers now (its list is empty until it does).
        status, body = http_get(f"{self.flower_url}/api/workers?refresh=1", auth=self.flower_login)
        return list(json.loads(body)) if status == 200 else []

    @property
    def flower_login(self) -> str:
        return f"{self.flower_username}:{self.flower_password}"

    def manage(self, *args: str) -> str:
        """Run a management command in the platform's environment; its output."""
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            pytest.fail(f"manage.py {args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def shell(self, code: str):
        """Run Python in the platform's Django (``manage.py shell -c``); the JSON its last line prints."""
        output = self.manage("shell", "--no-imports", "--verbosity=0", "-c", code)
        return json.loads(output.strip().splitlines()[-1])

    def flower_api(self, path: str):
        status, body = http_get(f"{self.flower_url}{path}", auth=self.flower_login)
        assert status == 200, f"Flower answered {status} on {path}: {body[:500]}"
        return json.loads(body)

    def flower_tasks(self, **query: str) -> dict[str, dict]:
        """Flower's tasks by task id (``/api/tasks``; ``state="FAILURE"`` and its other filters)."""
        return self.flower_api(f"/api/tasks?{urllib.parse.urlencode(query)}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, characters: int = 4000) -> str:
        return f"(end of {self.log_path})\n" + self.log_text()[-characters:]

    def stop(self) -> list[str]:
        """Stop run_platform as Ctrl-C would; the processes it left running (killed now), if any."""
        if self._process is None:
            return []
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        left = {pid: command for pid, command in self._started.items() if _command_line(pid) == command}
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return [f"{pid} {command}" for pid, command in left.items()]


def http_get(url: str, *, auth: str | None = None) -> tuple[int, str]:
    """(status, body); status 0 while nothing listens."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError:
        return 0, ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (children's children too), with its command line."""
    table = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in table.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, pending = {}, list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found[child] = _command_line(child)
        pending.extend(children.get(child, []))
    return found


def _command_line(pid: int) -> str | None:
    """The process's command line; None once it is gone. A pid reused by another
    program has another command line, so it is never taken for a leftover."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
