"""A worker refuses to start on what ``manage.py check`` refuses: same message, non-zero exit."""

import sys

import pytest

from apps.catalog.messages import ReserveStock
from messaging.registry import Handler, registry
from workers.__main__ import main, refuse_to_start_on_check_errors


def reserve_again(command):
    """A second handler for a command, defined outside any context."""


@pytest.fixture
def two_handlers_for_one_command(monkeypatch):
    second = Handler(func=reserve_again, kind="command", target=ReserveStock)
    monkeypatch.setattr(registry, "handlers", [*registry.handlers, second])


def test_a_worker_starts_past_the_checks_when_there_is_no_error():
    refuse_to_start_on_check_errors()  # no exit


def test_a_worker_refuses_to_start_with_the_message_check_gives(two_handlers_for_one_command):
    with pytest.raises(SystemExit) as stopped:
        refuse_to_start_on_check_errors()

    message = stopped.value.code
    assert isinstance(message, str), "sys.exit with a message: exit status 1"
    assert "SystemCheckError: System check identified some issues" in message
    assert "Command 'catalog.ReserveStock' has 2 handlers" in message
    assert "A command has exactly one receiver" in message


def test_the_worker_entry_point_checks_before_it_reaches_the_broker(two_handlers_for_one_command, monkeypatch):
    # Given the entry point's own changes to the process undone after the test
    monkeypatch.setenv("BUS_CONTEXT", "catalog")
    monkeypatch.setenv("DJANGO_DEBUG", "false")
    monkeypatch.setattr(sys, "path", list(sys.path))
    from config.celery_app import app

    def no_broker_yet(*args, **kwargs):
        raise AssertionError("the worker reached the broker before its checks")

    monkeypatch.setattr(app, "connection_for_write", no_broker_yet)

    # When python -m workers catalog starts, then it stops at the checks
    with pytest.raises(SystemExit) as stopped:
        main(["catalog"])

    assert "has 2 handlers" in str(stopped.value.code)


def test_a_worker_whose_user_may_not_declare_consumes_its_queues_without_declaring_them(monkeypatch):
    # Given Celery's queues as the app has them (the topology's), restored after the test
    from celery import current_app

    from messaging.topology import Topology
    from workers.__main__ import least_privilege

    queues = Topology().queues()
    monkeypatch.setattr(current_app.conf, "task_queues", queues)
    extra = ["--concurrency=2", "--without-gossip"]

    least_privilege(current_app, Topology().context_queues("ordering"), extra)

    assert {q.name for q in queues if q.no_declare} == {q.name for q in Topology().context_queues("ordering")}
    assert extra == ["--concurrency=2", "--without-gossip", "--without-mingle"]
