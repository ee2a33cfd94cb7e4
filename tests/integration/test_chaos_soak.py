"""The chaos soak in its short form (``python -m bench chaos``, bench/chaos.py):
a minute of checkouts and price changes while workers, pool processes and the
relay are killed and the broker and PostgreSQL each go down once; nothing is
lost, nothing applied twice, and every business invariant holds. On RabbitMQ it
stops the node and cluster the tests run on; on Redis it starts a redis-server
and a PostgreSQL cluster of its own, and SIGKILLs that redis-server."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connections

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_chaos_soak_loses_nothing_and_applies_nothing_twice(real_services):
    run = subprocess.run(
        [sys.executable, "-m", "bench", "chaos", "--duration", "60", "--checkouts", "2", "--price-changes", "2",
         "--kill-every", "5", "--outage", "8", "--settle", "300"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    # The soak stopped PostgreSQL: this process's own sessions are gone.
    connections.close_all()

    assert run.returncode == 0, f"the chaos soak failed:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    report = run.stdout
    assert "RabbitMQ stopped ×1" in report and "PostgreSQL stopped ×1" in report
    _assert_nothing_lost_or_applied_twice(report)


def test_a_short_chaos_soak_on_redis_loses_nothing_and_applies_nothing_twice(real_services):
    run = subprocess.run(
        [sys.executable, "-m", "bench", "chaos", "--broker", "redis", "--duration", "60", "--checkouts", "2",
         "--price-changes", "2", "--kill-every", "5", "--outage", "8", "--settle", "300"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )

    assert run.returncode == 0, f"the chaos soak on Redis failed:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    report = run.stdout
    assert "Redis killed and restarted ×1" in report and "PostgreSQL stopped ×1" in report
    _assert_nothing_lost_or_applied_twice(report)


def _assert_nothing_lost_or_applied_twice(report: str) -> None:
    for check in ("lost (due, neither applied nor dead-lettered)", "duplicated (applied more than once)",
                  "dead-lettered", "orders not Paid or Cancelled"):
        [line] = [line for line in report.splitlines() if line.strip().startswith(check)]
        assert line.split()[-1] == "0", line
