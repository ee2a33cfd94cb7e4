"""Starting and stopping the processes a scenario measures (workers, relay)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class ProcessGroup:
    """Named subprocesses with their logs; ``ready`` waits for a line in each log."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.processes: dict[str, subprocess.Popen] = {}
        self.ready_lines: dict[str, str] = {}

    def start(self, name: str, argv: list[str], *, ready_line: str, env: dict[str, str] | None = None) -> None:
        """Start ``argv`` as ``name``, with the group's environment updated by ``env``."""
        log = open(self.logs / f"{name}.log", "w")
        self.processes[name] = subprocess.Popen(
            argv, cwd=ROOT, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.ready_lines[name] = ready_line

    def start_worker(self, context: str, *, concurrency: int) -> None:
        self.start(f"worker-{context}", [
            sys.executable, "-m", "workers", context, f"--concurrency={concurrency}",
            "--without-gossip", "--without-mingle", "--loglevel=INFO",
        ], ready_line=" ready.")

    def start_relay(self) -> None:
        self.start("relay", [sys.executable, "manage.py", "relay"], ready_line="relay: publishing")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.processes)
        while pending:
            for name in list(pending):
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited at start:\n{self.log(name)[-3000:]}")
                if self.ready_lines[name] in self.log(name):
                    pending.discard(name)
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout}s: {sorted(pending)}")
            time.sleep(0.2)

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    def stop(self) -> None:
        # SIGTERM to the main process alone, as a supervisor stops a Celery worker: it
        # stops its pool itself. Signalled too, a pool process could die holding the
        # pool's queue lock, and the worker then hung at exit until the SIGKILL below.
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
