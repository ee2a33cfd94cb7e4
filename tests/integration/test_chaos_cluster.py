"""The chaos soak's cluster form (``python -m bench chaos --cluster``, bench/chaos_cluster.py):
a three-node RabbitMQ cluster and hosts that are network namespaces, started here; under a
steady flow of checkouts and price changes, one at a time, a follower stopped, the leader
of ``ordering.commands`` killed, a node cut off from the others, a worker host and a relay
host cut off. Nothing is lost, nothing applied twice, every order ends Paid or Cancelled,
every queue of the bus is on the three nodes, and after each node fault (stopped, killed,
cut off) the flow came back before the node did: the stall is the failover, bounded by how
soon the others declare a node down (``net_ticktime``), never the whole outage. Each
fault's stall is printed (pytest -s).

It needs root (namespaces, a bridge) and touches no service anyone else uses: its nodes,
its PostgreSQL cluster and its network are its own, removed at the end. About three
minutes, the cluster's start included."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos_cluster import PARTITION_CHECK
from tests.integration.test_chaos_soak import _assert_nothing_lost_or_applied_twice

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_a_cluster_loses_nothing_and_its_flow_stalls_no_longer_than_a_failover(real_services):
    if os.geteuid() != 0 or not shutil.which("ip"):
        # Failed, never skipped, as every test missing what it needs (scripts/test runs as root in CI).
        pytest.fail("the cluster soak needs root and iproute2 (`ip`): network namespaces, a bridge")
    run = subprocess.run(
        [sys.executable, "-m", "bench", "chaos", "--cluster", "--checkouts", "2", "--price-changes", "2",
         "--outage", "8", "--partition", "40", "--quiet", "4", "--settle", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    print(run.stdout)  # the recovery time of each fault, for the record (pytest -s, or the CI log on failure)

    report = run.stdout
    checks = dict(re.findall(r"^  (\S.*?)\s{2,}(\d+)(?:   <-- FAILED)?$", report.split("checks (0 passes):")[-1],
                             re.MULTILINE))
    assert PARTITION_CHECK in checks and len(checks) > 15, f"no report:\n{report[-8000:]}\n{run.stderr[-3000:]}"
    for fault in ("follower stopped ×1", "leader killed ×1", "node partitioned ×1", "worker host cut off ×1",
                  "relay host cut off ×1"):
        assert fault in report
    failed = {name for name, count in checks.items() if count != "0"}
    assert not failed, f"the cluster soak failed {sorted(failed)}:\n{report[-8000:]}"
    assert run.returncode == 0, f"the cluster soak failed:\n{report[-8000:]}\n{run.stderr[-3000:]}"
    _assert_nothing_lost_or_applied_twice(report)
