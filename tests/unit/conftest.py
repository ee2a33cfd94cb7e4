"""The unit tests run in this one process, with no service and no subprocess: the loop a
change is tried in, under a minute. A test that starts a process belongs in ``tests/process``
(or ``tests/e2e``); this fails it here, whatever starts the process."""

import subprocess

import pytest


class ProcessStartedError(AssertionError):
    """A unit test tried to start a process."""


@pytest.fixture(autouse=True)
def no_subprocesses(monkeypatch):
    def refuse(self, args, *rest, **options):
        raise ProcessStartedError(
            f"unit tests run in-process: move this test to tests/process (it tried to start {args!r})")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
