"""A private redis-server for a test session: its own port and folder, AOF on.

Started as a child process (never the machine's shared one), so a test may kill
it outright and start it again on the same port and data: what it had answered
is in its append-only file (``appendfsync everysec``, as the compose file runs it).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis


#: What the platform's processes need on Redis in a test, as environment variables.
PLATFORM_ENV = {
    # A killed worker's message comes back after the visibility timeout: seconds
    # here, not the default quarter of an hour. It must outlast what a worker
    # holds (manage.py check): the time limit, and a retry's wait.
    "BUS_REDIS_VISIBILITY_TIMEOUT": "10",
    "CELERY_TASK_TIME_LIMIT": "4",
    "CELERY_TASK_SOFT_TIME_LIMIT": "3",
    "BUS_DATABASE_WAIT": "1",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.port = port or _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> None:
        """Start it (again, on the same port and data) and return once it answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--logfile", str(self.folder / "redis.log")],
            cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return
            except redis.exceptions.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{(self.folder / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: nothing gets to flush or save."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
