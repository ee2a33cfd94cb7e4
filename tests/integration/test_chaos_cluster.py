"""The chaos soak's cluster form (``python -m bench chaos --cluster``, bench/chaos_cluster.py):
a three-node RabbitMQ cluster and hosts that are network namespaces, started here; under a
steady flow of checkouts and price changes, one at a time, a follower stopped, the leader
of ``ordering.commands`` killed, a node cut off from the others, a worker host and a relay
host cut off. Nothing is lost, nothing applied twice, every order ends Paid or Cancelled,
every queue of the bus is on the three nodes, and after each node fault the flow came
back before the node did: it stalls for as long as the cluster takes to notice (seconds;
for a partition, Erlang's tick, which the test's cluster sets to 10 s), never for the
whole outage. Each fault's stall is printed (pytest -s).

It needs root (namespaces, a bridge) and touches no service anyone else uses: its nodes,
its PostgreSQL cluster and its network are its own, removed at the end. About three
minutes, the cluster's start included."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_chaos_soak import _assert_nothing_lost_or_applied_twice

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="network namespaces need root and iproute2")
def test_a_cluster_loses_nothing_and_its_flow_stalls_no_longer_than_a_failover(real_services):
    run = subprocess.run(
        [sys.executable, "-m", "bench", "chaos", "--cluster", "--checkouts", "2", "--price-changes", "2",
         "--outage", "8", "--partition", "30", "--quiet", "4", "--settle", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    print(run.stdout)  # the recovery time of each fault, for the record (pytest -s, or the CI log on failure)

    assert run.returncode == 0, f"the cluster soak failed:\n{run.stdout[-8000:]}\n{run.stderr[-3000:]}"
    report = run.stdout
    for fault in ("follower stopped ×1", "leader killed ×1", "node partitioned ×1", "worker host cut off ×1",
                  "relay host cut off ×1"):
        assert fault in report
    _assert_nothing_lost_or_applied_twice(report)
    for check in ("node faults that stalled the flow for the whole fault", "queues of the bus on fewer than three nodes",
                  "contexts or relays without two live processes, at start or end"):
        [line] = [line for line in report.splitlines() if line.strip().startswith(check)]
        assert line.split()[-1] == "0", line
