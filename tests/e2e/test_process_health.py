"""Processes that fail say so: a worker that stops on an error exits non-zero, an
unreachable broker is reported within seconds (password masked), and each
process's liveness file tells a supervisor whether it is healthy."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.polling import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
#: A broker URL nothing listens on, with a password that must never be printed.
UNREACHABLE_BROKER = "amqp://platform:s3cret-password@127.0.0.1:9/platform"


@pytest.fixture
def embedded_env(tmp_path):
    """The embedded default in a folder of its own, beating fast."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "BUS_DATA_DIR": str(tmp_path),
           "BUS_HEALTH_INTERVAL": "0.5", "BUS_HEALTH_MAX_AGE": "3", "PYTHONUNBUFFERED": "1"}
    for name in ("CELERY_BROKER_URL", "DATABASE_URL"):
        env.pop(name, None)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    return env


def _start(argv, env, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGCONT)
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _bus_health(name: str, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "bus_health", name], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_worker_that_stops_on_an_error_exits_non_zero(embedded_env):
    # Whatever stops Celery's consumer ("Unrecoverable error"), the exit code says so.
    crash = textwrap.dedent("""
        import sys
        sys.path.insert(0, "platform")
        import celery.worker.consumer.consumer as consumer_module
        def start(self):
            raise RuntimeError("the consumer broke")
        consumer_module.Consumer.start = start
        from workers.__main__ import main
        main(["ordering", "--pool=solo"])
    """)

    result = subprocess.run([sys.executable, "-c", crash], cwd=ROOT, env=embedded_env, capture_output=True,
                            text=True, timeout=120)

    assert "Unrecoverable error: RuntimeError('the consumer broke')" in result.stderr + result.stdout
    assert result.returncode != 0


@pytest.mark.parametrize("argv", [["-m", "workers", "ordering"], ["manage.py", "relay"]], ids=["worker", "relay"])
def test_a_process_that_cannot_reach_the_broker_says_so_within_seconds_and_keeps_trying(embedded_env, tmp_path, argv):
    env = {**embedded_env, "CELERY_BROKER_URL": UNREACHABLE_BROKER}
    log = tmp_path / "process.log"
    process = _start([sys.executable, *argv], env, log)
    try:
        wait_for(lambda: "cannot reach the broker at amqp://platform:**@127.0.0.1:9/platform" in log.read_text(),
                 timeout=20, message="the process to say it cannot reach the broker")
        time.sleep(3)

        assert process.poll() is None, "it keeps trying"
        assert log.read_text().count("cannot reach the broker") >= 2
        assert "s3cret-password" not in log.read_text()
    finally:
        _stop(process)


def test_a_consuming_worker_is_healthy_and_a_stuck_one_is_not(embedded_env, tmp_path):
    worker = _start([sys.executable, "-m", "workers", "ordering", "--concurrency=1"], embedded_env,
                    tmp_path / "worker.log")
    try:
        wait_for(lambda: _bus_health("worker-ordering", embedded_env).returncode == 0, timeout=60,
                 message="the worker to report itself consuming")
        assert "worker-ordering: consuming" in _bus_health("worker-ordering", embedded_env).stdout

        worker.send_signal(signal.SIGSTOP)  # stuck: nothing in it runs any more
        time.sleep(4)
        stuck = _bus_health("worker-ordering", embedded_env)

        assert stuck.returncode != 0
        assert "has said nothing for" in stuck.stderr
    finally:
        _stop(worker)
    assert _bus_health("worker-ordering", embedded_env).returncode != 0, "a stopped worker is not healthy"


def test_the_relay_is_healthy_while_idle_and_unhealthy_while_it_cannot_publish(embedded_env, tmp_path):
    relay = _start([sys.executable, "manage.py", "relay"], embedded_env, tmp_path / "relay.log")
    try:
        wait_for(lambda: "relay: idle" in _bus_health("relay", embedded_env).stdout, timeout=60,
                 message="the relay to report itself idle")
    finally:
        _stop(relay)

    failing_env = {**embedded_env, "CELERY_BROKER_URL": UNREACHABLE_BROKER}
    relay = _start([sys.executable, "manage.py", "relay"], failing_env, tmp_path / "failing-relay.log")
    try:
        failing = wait_for(lambda: (r := _bus_health("relay", failing_env)).returncode != 0 and "failing" in r.stderr
                           and r, timeout=30, message="the relay to report itself failing")
        assert "cannot reach the broker" in failing.stderr
    finally:
        _stop(relay)
