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
import urllib.parse

from django.conf import settings


def rabbitmqctl(*args: str, vhost: str | None = None) -> list[dict]:
    """Run a ``rabbitmqctl list_*`` command on the test vhost (or ``vhost``); rows as dicts."""
    vhost = vhost or settings.CELERY_BROKER_URL.rsplit("/", 1)[-1] or "/"
    return json.loads(rabbitmqctl_run(*args, "-p", vhost, "--formatter", "json"))


@contextlib.contextmanager
def empty_vhost(name: str):
    """A new, empty vhost the tests' broker user may use, deleted afterwards; yields its broker URL."""
    url = urllib.parse.urlsplit(settings.CELERY_BROKER_URL)
    rabbitmqctl_run("delete_vhost", name, check=False)  # left over by an interrupted run
    rabbitmqctl_run("add_vhost", name)
    try:
        rabbitmqctl_run("set_permissions", "-p", name, url.username, ".*", ".*", ".*")
        yield url._replace(path=f"/{name}").geturl()
    finally:
        rabbitmqctl_run("delete_vhost", name, check=False)


def rabbitmqctl_run(*args: str, check: bool = True) -> str:
    """Run any rabbitmqctl command; its output."""
    return subprocess.run(["rabbitmqctl", "-q", *args], check=check, capture_output=True, text=True,
                          timeout=120).stdout


def broker_stop() -> None:
    """Stop RabbitMQ (the application; the Erlang node stays up to be started again)."""
    rabbitmqctl_run("stop_app")


def broker_start() -> None:
    """Start RabbitMQ again; returns once it accepts connections."""
    rabbitmqctl_run("start_app")
    rabbitmqctl_run("await_startup")


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
    pid = json.loads(rabbitmqctl_run("status", "--formatter", "json"))["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def memory_alarm():
    """Raise RabbitMQ's memory alarm: it blocks every connection that publishes."""
    kind, value = next(iter(json.loads(rabbitmqctl_run("status", "--formatter", "json"))
                            ["vm_memory_high_watermark_setting"].items()))
    rabbitmqctl_run("set_vm_memory_high_watermark", "absolute", "1")
    try:
        yield
    finally:
        restore = ["absolute", str(value)] if kind == "absolute" else [str(value)]
        rabbitmqctl_run("set_vm_memory_high_watermark", *restore)
