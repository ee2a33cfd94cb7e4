"""Liveness files: each long-running process of the bus says, every few seconds,
that it is alive and what it is doing.

A worker writes ``consuming`` from its event loop's timer while it is connected
and consuming, ``reconnecting`` when it lost the broker; the relay writes
``publishing`` or ``idle`` after each round and ``failing`` (with the error)
while it cannot publish. A process that is stuck writes nothing, so its file
goes stale. ``manage.py bus_health <name>`` reads the file for a supervisor
(a compose healthcheck, a Kubernetes exec probe) and exits non-zero unless the
process is healthy.

One file per process, named by its name and pid (``worker-basket.4242.json``): two
workers of one context on one host each say how they are. A reader looks at the
files of the processes still running on this host (``BUS_HEALTH_DIR`` is a local
folder, never one shared between hosts or containers); a file left by a process
that died without a word is ignored, and removed by the next process of its name.
A file names its process's start time too, so a pid the system has given to
another process since does not make a dead one look alive.
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


def health_file(name: str, pid: int | None = None) -> Path:
    """The liveness file of process ``pid`` (this one by default) named ``name``."""
    return Path(settings.BUS_HEALTH_DIR) / f"{name}.{os.getpid() if pid is None else pid}.json"


@dataclasses.dataclass(frozen=True)
class Health:
    name: str
    state: str
    detail: str
    pid: int
    time: float
    #: When the process started (clock ticks since boot, from /proc): with the pid, what
    #: tells it from a later process given the same pid. None where /proc cannot say.
    started: int | None = None

    def problem(self, *, max_age: float, now: float | None = None) -> str | None:
        """Why this process is not healthy, or None."""
        age = (time.time() if now is None else now) - self.time
        if age > max_age:
            return f"{self.name} (pid {self.pid}) has said nothing for {age:.0f}s (last: {self.state})"
        if self.state not in HEALTHY_STATES:
            return f"{self.name} (pid {self.pid}) is {self.state}: {self.detail}".rstrip(": ")
        return None


def read_health(name: str, pid: int | None = None) -> Health | None:
    """What process ``pid`` named ``name`` last said; without a pid, the latest word of any
    running process of that name. None if there is none."""
    if pid is not None:
        return _read(health_file(name, pid))
    return max(read_healths(name), key=lambda health: health.time, default=None)


def read_healths(name: str) -> list[Health]:
    """What each running process named ``name`` last said, by pid."""
    found = []
    for pid, path in _files_of(name):
        health = _read(path)
        if health is not None and _is_running(pid, health.started):
            found.append(health)
    return found


def _files_of(name: str) -> list[tuple[int, Path]]:
    files = []
    for path in sorted(Path(settings.BUS_HEALTH_DIR).glob(f"{name}.*.json")):
        pid = path.name.removeprefix(f"{name}.").removesuffix(".json")
        if pid.isdigit():
            files.append((int(pid), path))
    return files


def _read(path: Path) -> Health | None:
    try:
        return Health(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _is_running(pid: int, started: int | None = None) -> bool:
    """Whether process ``pid`` is alive and, if ``started`` is known, still the one that started then."""
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, the pid is only looked up
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    return started is None or _start_time(pid) in (None, started)


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``, field 22)."""
    try:
        # The command name (field 2) may hold spaces and parentheses: count from its closing one.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
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
            if self._last is None:
                self._forget_the_dead()
            scratch = path.with_suffix(".tmp")
            scratch.write_text(json.dumps(dataclasses.asdict(
                Health(name=self.name, state=state, detail=detail[:500], pid=os.getpid(), time=now,
                       started=_start_time(os.getpid())))))
            os.replace(scratch, path)
        except OSError as exc:
            # Never stop the work for its report (a full or read-only disk): the file
            # goes stale, which is what a supervisor then sees. Said once a minute.
            if now - self._complained_at > 60:
                logger.warning("cannot write the liveness file %s: %s", path, exc)
                self._complained_at = now
            return
        self._last, self._written_at = (state, detail), now

    def _forget_the_dead(self) -> None:
        # Files of processes of this name that were killed (SIGKILL, a crash) before they could forget.
        for pid, path in _files_of(self.name):
            health = _read(path)
            if not _is_running(pid, health.started if health else None):
                path.unlink(missing_ok=True)

    def forget(self) -> None:
        """A clean stop: no file, so nobody mistakes the stopped process for a stuck one."""
        try:
            health_file(self.name).unlink(missing_ok=True)
        except OSError:
            pass
