"""A private redis-server for a test session: its own port and folder, AOF on;
or a private Sentinel group: a primary, one replica and three sentinels.

Started as child processes (never the machine's shared one), so a test may kill
one outright and start it again on the same port and data: what it had answered
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
    def __init__(self, folder: Path, port: int | None = None, *, replica_of: int | None = None) -> None:
        self.folder = Path(folder)
        self.port = port or _free_port()
        #: The port of the primary this server replicates, if it is a replica.
        self.replica_of = replica_of
        self.process: subprocess.Popen | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> None:
        """Start it (again, on the same port and data) and return once it answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--logfile", str(self.folder / "redis.log"),
             *(["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else [])],
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


#: The name the sentinels know the primary by (``BUS_REDIS_SENTINEL_MASTER``).
MASTER_NAME = "bus"


class SentinelGroup:
    """A primary, one replica and three sentinels (a quorum of two) on free ports.

    The sentinels call the primary down after ``down_after`` ms without an answer
    and promote the replica: seconds here, not Redis's default 30 s.
    """

    def __init__(self, folder: Path, *, down_after: int = 1000, failover_timeout: int = 4000) -> None:
        self.folder = Path(folder)
        self.primary = RedisServer(self.folder / "primary")
        self.replica = RedisServer(self.folder / "replica", replica_of=self.primary.port)
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []
        self.down_after, self.failover_timeout = down_after, failover_timeout

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.sentinel_ports)

    def start(self, timeout: float = 20) -> None:
        self.primary.start()
        self.replica.start()
        for number, port in enumerate(self.sentinel_ports):
            folder = self.folder / f"sentinel-{number}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "sentinel.conf").write_text("\n".join([  # a sentinel rewrites its file: one each
                f"port {port}", "bind 127.0.0.1", f"dir {folder}", f"logfile {folder / 'sentinel.log'}",
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} 2",
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after}",
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout}",
                f"sentinel parallel-syncs {MASTER_NAME} 1", "",
            ]))
            self.sentinels.append(subprocess.Popen(["redis-server", str(folder / "sentinel.conf"), "--sentinel"],
                                                   cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        self.wait_until(lambda: self.replica.client().info("replication")["master_link_status"] == "up"
                        and all(self._sentinel(port).sentinel_master(MASTER_NAME)["num-other-sentinels"] == 2
                                and self._sentinel(port).sentinel_master(MASTER_NAME)["num-slaves"] == 1
                                for port in self.sentinel_ports),
                        timeout, "the replica to sync and the sentinels to know each other and the replica")

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=1, decode_responses=True)

    def primary_port(self) -> int:
        """The port of the primary as the sentinels name it now."""
        return int(self._sentinel(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER_NAME)[1])

    @staticmethod
    def wait_until(condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except (redis.exceptions.RedisError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            if sentinel.poll() is None:
                sentinel.terminate()
                sentinel.wait(timeout=30)
        self.replica.stop()
        self.primary.stop()
