"""Flower as docker-compose and run_platform start it: every page behind its login,
``/metrics`` included (Flower itself leaves that one open), and workers that start
after it listed in its API without a refresh."""

import base64
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.compose import FILLED_IN, compose_config
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LOGIN = "watcher:correct-horse"


def _compose_flower_command(tmp_path) -> list[str]:
    """The flower service's command as docker-compose resolves it."""
    return compose_config(tmp_path, {**FILLED_IN, "FLOWER_BASIC_AUTH": LOGIN})["services"]["flower"]["command"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(url: str, auth: str | None = None) -> urllib.request.Request:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    return request


def _status(url: str, auth: str | None = None) -> int:
    request = _request(url, auth)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0  # not listening yet


@pytest.fixture
def local_env(tmp_path):
    """The embedded default's settings: the command's flags are under test, not the services."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    return {**env, "DJANGO_SETTINGS_MODULE": "config.settings.local", "BUS_DATA_DIR": str(tmp_path / "var"),
            "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"}


def test_flower_as_compose_starts_it_asks_for_the_login_on_metrics_too(tmp_path, local_env):
    command = _compose_flower_command(tmp_path)
    assert command[:4] == ["celery", "-A", "config", "flower"]
    port = _free_port()
    argv = [sys.executable, "-m", *[a for a in command if not a.startswith("--port=")],
            f"--port={port}", "--address=127.0.0.1"]

    flower = subprocess.Popen(argv, cwd=ROOT, env=local_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/healthcheck") == 200 or flower.poll() is not None,
                 message="Flower to answer")
        assert flower.poll() is None

        assert _status(f"http://127.0.0.1:{port}/metrics") == 401
        assert _status(f"http://127.0.0.1:{port}/metrics", "watcher:wrong") == 401
        assert _status(f"http://127.0.0.1:{port}/metrics", LOGIN) == 200
        assert _status(f"http://127.0.0.1:{port}/") == 401
    finally:
        flower.terminate()
        flower.wait(timeout=30)


def test_flower_with_the_platform_configuration_refuses_to_start_without_a_login(local_env):
    env = {k: v for k, v in local_env.items() if k != "FLOWER_BASIC_AUTH"}

    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", "flower", "--conf=platform/config/flowerconfig.py",
         f"--port={_free_port()}", "--address=127.0.0.1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode != 0
    assert "Flower needs a login" in result.stderr


def test_a_worker_started_after_flower_is_in_its_api_without_a_refresh(tmp_path, local_env):
    # Flower first, as run_platform and docker-compose start it: its one inspection at
    # start finds no worker, and Flower's own API then listed none until ?refresh=1.
    port = _free_port()
    env = {**local_env, "FLOWER_BASIC_AUTH": LOGIN}
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "flower", "--conf=platform/config/flowerconfig.py",
         f"--port={port}", "--address=127.0.0.1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/healthcheck") == 200 or flower.poll() is not None,
                 message="Flower to answer")
        assert _workers_in_api(port) == {}

        worker = subprocess.Popen([sys.executable, "-m", "workers", "basket", "--concurrency=1"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        listed = wait_for(lambda: {name: info for name, info in _workers_in_api(port).items()
                                   if name.startswith(f"basket.{worker.pid}@") and "stats" in info},
                          timeout=60, message="Flower's API to list the worker")
        [(name, info)] = listed.items()
        assert info["stats"]["pid"] == worker.pid
        assert "catalog.ProductPriceChanged" in info["registered"]
    finally:
        for process in (worker, flower):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


def _workers_in_api(port: int) -> dict:
    """``/api/workers`` as an operator's script reads it: no ``?refresh=1``."""
    with urllib.request.urlopen(_request(f"http://127.0.0.1:{port}/api/workers", LOGIN), timeout=10) as response:
        return json.load(response)
