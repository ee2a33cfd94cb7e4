"""Liveness files: one per process, so two workers of one context on one host each say how they are."""

import dataclasses
import json
import os
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from messaging import health as health_module
from messaging.health import Health, Heartbeat, health_file, read_health, read_healths


@pytest.fixture(autouse=True)
def health_dir(settings, tmp_path):
    settings.BUS_HEALTH_DIR = tmp_path
    return tmp_path


def _another_process_says(name: str, pid: int, state: str, *, seconds_ago: float = 0, started=None) -> None:
    """A liveness file as the process ``pid`` writes it."""
    health = Health(name=name, state=state, detail="", pid=pid, time=time.time() - seconds_ago, started=started)
    health_file(name, pid).write_text(json.dumps(dataclasses.asdict(health)))


def _a_pid_that_has_exited() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _bus_health(*args) -> str:
    out = StringIO()
    call_command("bus_health", *args, stdout=out)
    return out.getvalue()


def test_two_workers_of_one_context_on_one_host_keep_a_file_each():
    # Given this process and another one (our parent, running) both basket workers
    Heartbeat("worker-basket").beat("consuming")
    _another_process_says("worker-basket", os.getppid(), "reconnecting")

    # then each has its own file, and neither overwrote the other
    healths = {health.pid: health.state for health in read_healths("worker-basket")}
    assert healths == {os.getpid(): "consuming", os.getppid(): "reconnecting"}
    assert read_health("worker-basket", os.getpid()).state == "consuming"


def test_bus_health_is_healthy_only_when_every_process_of_the_name_is():
    Heartbeat("worker-basket").beat("consuming")
    assert _bus_health("worker-basket") == f"worker-basket: consuming (pid {os.getpid()})\n"

    _another_process_says("worker-basket", os.getppid(), "consuming", seconds_ago=3600)

    with pytest.raises(CommandError, match=f"worker-basket \\(pid {os.getppid()}\\) has said nothing for"):
        _bus_health("worker-basket")
    # One process asked for by its pid
    assert _bus_health("worker-basket", "--pid", str(os.getpid())) == f"worker-basket: consuming (pid {os.getpid()})\n"
    with pytest.raises(CommandError, match="has said nothing"):
        _bus_health("worker-basket", "--pid", str(os.getppid()))


@pytest.mark.allows_fork  # to make a pid that has exited
def test_a_file_left_by_a_process_that_died_is_ignored_and_removed_by_the_next_of_its_name(health_dir):
    dead = _a_pid_that_has_exited()
    _another_process_says("relay", dead, "idle")

    assert read_healths("relay") == [] and read_health("relay") is None
    with pytest.raises(CommandError, match="relay: no liveness file"):
        _bus_health("relay")

    Heartbeat("relay").beat("idle")

    assert not health_file("relay", dead).exists()
    assert [health.pid for health in read_healths("relay")] == [os.getpid()]


def test_a_process_that_stops_cleanly_takes_its_own_file_only():
    Heartbeat("worker-basket").beat("consuming")
    _another_process_says("worker-basket", os.getppid(), "consuming")

    Heartbeat("worker-basket").forget()

    assert [health.pid for health in read_healths("worker-basket")] == [os.getppid()]


def test_a_dead_processs_file_whose_pid_was_given_to_another_process_is_ignored_and_forgotten():
    # Given a file of a killed worker whose pid the system has since given to another process
    # (our parent stands for it: running, but started at another time than the file says)
    parent_started = health_module._start_time(os.getppid())
    assert parent_started is not None
    _another_process_says("worker-basket", os.getppid(), "consuming", seconds_ago=3600, started=parent_started + 1)

    # then no reader counts it, and the next process of that name removes it
    assert read_healths("worker-basket") == []
    Heartbeat("worker-basket").beat("consuming")
    assert not health_file("worker-basket", os.getppid()).exists()
    assert _bus_health("worker-basket") == f"worker-basket: consuming (pid {os.getpid()})\n"


def test_a_process_writes_its_start_time_with_its_pid():
    Heartbeat("relay").beat("idle")

    assert read_health("relay", os.getpid()).started == health_module._start_time(os.getpid())
