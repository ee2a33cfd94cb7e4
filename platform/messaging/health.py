"""Liveness files: each long-running process of the bus says, every few seconds,
that it is alive and what it is doing.

A worker writes ``consuming`` from its event loop's timer while it is connected
and consuming, ``reconnecting`` when it lost the broker; the relay writes
``publishing`` or ``idle`` after each round and ``failing`` (with the error)
while it cannot publish. A process that is stuck writes nothing, so its file
goes stale. ``manage.py bus_health <name>`` reads the file for a supervisor
(a compose healthcheck, a Kubernetes exec probe) and exits non-zero unless the
process is healthy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

#: States in which a process does its job (or finishes it: a worker stopping warmly).
HEALTHY_STATES = {"consuming", "publishing", "idle", "stopping"}


def health_file(name: str) -> Path:
    return Path(settings.BUS_HEALTH_DIR) / f"{name}.json"


@dataclasses.dataclass(frozen=True)
class Health:
    name: str
    state: str
    detail: str
    pid: int
    time: float

    def problem(self, *, max_age: float, now: float | None = None) -> str | None:
        """Why this process is not healthy, or None."""
        age = (time.time() if now is None else now) - self.time
        if age > max_age:
            return f"{self.name} (pid {self.pid}) has said nothing for {age:.0f}s (last: {self.state})"
        if self.state not in HEALTHY_STATES:
            return f"{self.name} (pid {self.pid}) is {self.state}: {self.detail}".rstrip(": ")
        return None


def read_health(name: str) -> Health | None:
    try:
        return Health(**json.loads(health_file(name).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


class Heartbeat:
    """Writes one process's liveness file: at once when its state changes, else at most
    every ``BUS_HEALTH_INTERVAL`` seconds (a beat is a small file replaced atomically)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._last: tuple[str, str] | None = None
        self._written_at = 0.0
        self._complained_at = 0.0

    def beat(self, state: str, detail: str = "") -> None:
        now = time.time()
        if (state, detail) == self._last and now - self._written_at < settings.BUS_HEALTH_INTERVAL:
            return
        path = health_file(self.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_suffix(f".{os.getpid()}.tmp")
            scratch.write_text(json.dumps(dataclasses.asdict(
                Health(name=self.name, state=state, detail=detail[:500], pid=os.getpid(), time=now))))
            os.replace(scratch, path)
        except OSError as exc:
            # Never stop the work for its report (a full or read-only disk): the file
            # goes stale, which is what a supervisor then sees. Said once a minute.
            if now - self._complained_at > 60:
                logger.warning("cannot write the liveness file %s: %s", path, exc)
                self._complained_at = now
            return
        self._last, self._written_at = (state, detail), now

    def forget(self) -> None:
        """A clean stop: no file, so nobody mistakes the stopped process for a stuck one."""
        try:
            health_file(self.name).unlink(missing_ok=True)
        except OSError:
            pass
