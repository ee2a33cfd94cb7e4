"""The unit tests run in this one process, with no service and no subprocess: the loop a
change is tried in, under a minute. A test that starts a process belongs in ``tests/process``
(or ``tests/e2e``); this fails it here, however it starts the process (``subprocess``,
``os.system``, ``os.posix_spawn``, an ``exec``, a fork or ``multiprocessing``): Python's audit
hooks see each of them. A test that must fork (to make a pid that has exited, say) says so
with ``@pytest.mark.allows_fork``."""

import sys
import threading

import pytest

#: The audit events of starting a process (https://docs.python.org/3/library/audit_events.html).
PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.fork", "os.forkpty", "pty.spawn"}
#: Whether the running test may start processes, and which events it may fork with.
_guard = threading.local()


class ProcessStartedError(BaseException):
    """A unit test tried to start a process. A BaseException: code under test catching
    ``Exception`` must not swallow it."""


def _refuse_processes(event: str, args: tuple) -> None:
    if event in PROCESS_EVENTS and getattr(_guard, "active", False) and event not in _guard.allowed:
        raise ProcessStartedError(
            f"unit tests run in-process: move this test to tests/process (it tried {event} {args[:2]!r})")


# An audit hook cannot be removed: it is added once and acts only while a unit test runs.
sys.addaudithook(_refuse_processes)


@pytest.fixture(autouse=True)
def no_subprocesses(request):
    _guard.active = True
    _guard.allowed = {"os.fork"} if request.node.get_closest_marker("allows_fork") else set()
    yield
    _guard.active = False
