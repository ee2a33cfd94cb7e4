"""RabbitMQ's own view of things, and faults injected into it, through rabbitmqctl.

Every call acts on the node ``RABBITMQ_NODENAME`` names (rabbitmqctl reads that
variable itself; ``scripts/services`` prints it for a private node), else on the
default node: the node the tests' broker URL points at, never another.
"""

import contextlib
import json
import os
import signal
import subprocess

from django.conf import settings


def rabbitmqctl(*args: str) -> list[dict]:
    """Run a ``rabbitmqctl list_*`` command on the test vhost; rows as dicts."""
    vhost = settings.CELERY_BROKER_URL.rsplit("/", 1)[-1] or "/"
    return json.loads(_rabbitmqctl(*args, "-p", vhost, "--formatter", "json"))


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True,
                          timeout=120).stdout


def broker_stop() -> None:
    """Stop RabbitMQ (the application; the Erlang node stays up to be started again)."""
    _rabbitmqctl("stop_app")


def broker_start() -> None:
    """Start RabbitMQ again; returns once it accepts connections."""
    _rabbitmqctl("start_app")
    _rabbitmqctl("await_startup")


@contextlib.contextmanager
def broker_stopped():
    broker_stop()
    try:
        yield
    finally:
        broker_start()


@contextlib.contextmanager
def broker_paused():
    """Freeze the broker's process (SIGSTOP): connections stay open and nothing answers."""
    pid = json.loads(_rabbitmqctl("status", "--formatter", "json"))["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def memory_alarm():
    """Raise RabbitMQ's memory alarm: it blocks every connection that publishes."""
    kind, value = next(iter(json.loads(_rabbitmqctl("status", "--formatter", "json"))
                            ["vm_memory_high_watermark_setting"].items()))
    _rabbitmqctl("set_vm_memory_high_watermark", "absolute", "1")
    try:
        yield
    finally:
        restore = ["absolute", str(value)] if kind == "absolute" else [str(value)]
        _rabbitmqctl("set_vm_memory_high_watermark", *restore)
