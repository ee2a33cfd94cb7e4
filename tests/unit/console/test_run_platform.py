"""run_platform's help and how it knows every process is up (the whole run: e2e/test_embedded_platform.py)."""

import os
import socket

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from apps.catalog.messages import ReserveStock
from console.management.commands import run_platform
from messaging.health import Heartbeat
from messaging.registry import Handler, registry


def _help() -> str:
    return run_platform.Command().create_parser("manage.py", "run_platform").format_help()


def test_help_gives_the_ports_with_their_defaults_and_addresses():
    text = _help()

    assert "port of the Django admin on 127.0.0.1 (default 8000)" in " ".join(text.split())
    assert "port of Flower on 127.0.0.1 (default 5555)" in " ".join(text.split())
    assert "  --web-port    the Django admin, http://127.0.0.1:8000/admin/ by default\n" in text
    assert "  --flower-port Flower, http://127.0.0.1:5555/ by default\n" in text


def test_help_says_how_to_log_in_to_the_admin_and_to_flower():
    text = _help()

    assert '  admin   user "admin", created on the first run with the password in\n' in text  # as written
    assert "DJANGO_SUPERUSER_PASSWORD" in text and "`python manage.py changepassword admin`" in text
    assert "  Flower  FLOWER_BASIC_AUTH (user:password) if set, else user \"admin\"" in text
    assert "Both are printed at start and again once every process is up." in text
    assert "`python manage.py seed_demo`" in text


def test_a_worker_is_up_only_once_its_own_process_reports_healthy(settings, tmp_path):
    settings.BUS_HEALTH_DIR = tmp_path

    assert not run_platform._healthy("worker-basket", os.getpid())  # no file yet
    Heartbeat("worker-basket").beat("consuming")
    assert run_platform._healthy("worker-basket", os.getpid())
    assert not run_platform._healthy("worker-basket", os.getpid() + 1)  # a file an earlier run left
    Heartbeat("relay").beat("failing", "broker unreachable")
    assert not run_platform._healthy("relay", os.getpid())


def test_web_and_flower_are_up_once_their_port_answers():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert not run_platform._listening(port)
        server.listen()
        assert run_platform._listening(port)


def reserve_again(command):
    """A second handler for a command, defined outside any context."""


def test_run_platform_refuses_to_start_on_what_check_refuses(monkeypatch):
    monkeypatch.setattr(registry, "handlers",
                        [*registry.handlers, Handler(func=reserve_again, kind="command", target=ReserveStock)])

    def nothing_starts(*args, **kwargs):
        raise AssertionError("run_platform started before its checks")

    monkeypatch.setattr(run_platform.Command, "handle", nothing_starts)

    # As `manage.py run_platform` runs it (call_command skips the checks unless told not to)
    with pytest.raises(SystemCheckError, match="A command has exactly one receiver"):
        call_command("run_platform", skip_checks=False)
