"""``python -m bench chaos --cluster``: the chaos soak on a three-node RabbitMQ cluster,
with the platform's workers and relays on hosts of their own.

It starts its own cluster (``tests/rabbitmq_cluster.py``: three nodes, each on a
host that is a network namespace on a bridge) and its own PostgreSQL cluster,
listening on the bridge, and touches neither the developer's default node nor
anyone's database. The platform runs on three more hosts:

- ``app1``, a worker host: a worker for each context;
- ``app2``: a worker for each context and a relay;
- ``app3``, a relay host: a relay.

So each context has two workers on two hosts competing for its queues, and two
relays on two hosts share the outbox. Each host's processes name the three nodes
in a failover URL, each host starting with another node, so connections are
spread over the cluster.

Under a steady flow of checkouts and price changes it does, one at a time, with
a quiet spell before, between and after: a follower of ``ordering.commands``
stopped (``stop_app``) and started; the leader of ``ordering.commands`` killed
(SIGKILL) and started again; the node leading the most queues cut off from the
others and from the clients (its host's network down) for longer than Erlang
takes to call it a partition, then healed; the worker host cut off and restored;
the relay host cut off and restored. Then it checks what the soak always checks
(nothing lost, nothing applied twice, every order final, stock and prices right)
and that every queue of the bus has a member on each of the three nodes.

For each fault it prints how long the flow stalled, measured on the messages
themselves: a message's wait is from when it could first be published (its
outbox row's time) until a consumer's inbox row says it was handled; the
report gives, among the messages sent from just before the fault to just after
its end, the longest wait, and when the last message held up by the fault (a
wait over the quiet spell's longest plus a second) was handled, from the fault's
start. A stall is within failover when that recovery time is shorter than the
fault: the flow came back while the node was still down.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from bench.chaos import CONTEXTS, Platform, say
from tests.own_services import PostgreSQLCluster
from tests.rabbitmq_cluster import BRIDGE_ADDRESS, NET_TICKTIME, SUBNET, Node, RabbitMQCluster

#: The queue whose leader and follower the faults pick: a context's command queue.
QUEUE = "ordering.commands"
#: Which processes run on which host (each context has a worker on two hosts).
LAYOUT = {
    "app1": [f"worker-{context}" for context in CONTEXTS],
    "app2": [*(f"worker-{context}" for context in CONTEXTS), "relay"],
    "app3": ["relay"],
}
WORKER_HOST, RELAY_HOST = "app1", "app3"
#: Until the others declare a cut-off node down (``net_ticktime``), what needs it waits: its
#: queues' leaders, the messages its clients held. Once the relays waited longer, and the flow
#: came back only after the node did (11.8 to 34 s for partitions of 20 to 30 s): on each
#: reconnection they declared the topology again (queue.bind waited), and took from the
#: dead-letter queue every round (basic.get waited). Now neither: 15.6 to 24.2 s for 30 s.
PARTITION_CHECK = "partitions that stalled the flow for the whole partition"
#: The faults of ``--faults``, by name: ClusterMonkey's methods.
FAULTS = {"follower": "follower_stopped", "leader": "leader_killed", "partition": "node_partitioned",
          "worker-host": "worker_host_cut_off", "relay-host": "relay_host_cut_off"}

#: The platform's settings on the cluster. A host that loses its network closes no
#: connection: the broker learns that a worker is gone, and hands its unacknowledged
#: messages to the other workers, only when the heartbeats stop, so the soak asks for
#: a short heartbeat (RabbitMQ's default of 60 s would hold those messages a minute).
CLUSTER_SETTINGS = {"CELERY_BROKER_HEARTBEAT": "4"}

#: The soak's PostgreSQL cluster, on the bridge. A client whose host is cut off leaves its
#: session open, with whatever it had locked: an inbox row it was inserting, which the
#: worker the broker hands the message to next waits for (measured: 11 s with keepalives
#: after 5 s, every 2 s, 3 probes). TCP keepalives end such a session within about 5 s
#: instead of the system's two hours.
DATABASE_OPTIONS = {"tcp_keepalives_idle": "2", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "2"}
DATABASE_CLUSTER = "chaos_cluster"

#: Seconds around a fault whose messages count for it: one taken just before may be held
#: by it; one sent just after it ended may meet its aftermath (clients reconnecting).
BEFORE, AFTER = 2.0, 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", action="store_true",
                        help="on a three-node RabbitMQ cluster of the soak's own, with workers and relays on "
                             "three hosts (network namespaces): node, partition and host faults one at a time; "
                             "--duration is then ignored")
    parser.add_argument("--partition", type=float, default=30.0,
                        help="with --cluster: seconds a node is cut off from the others (default 30; more than "
                             f"Erlang's {NET_TICKTIME * 1.25:.1f} s to declare a partition)")
    parser.add_argument("--faults", type=fault_list, default=list(FAULTS),
                        help="with --cluster: the faults, in order, comma-separated; one may come again "
                             f"(default {','.join(FAULTS)})")
    parser.add_argument("--quiet", type=float, default=5.0,
                        help="with --cluster: seconds of load without a fault before, between and after the "
                             "faults (default 5)")


def fault_list(text: str) -> list[str]:
    faults = [name.strip() for name in text.split(",") if name.strip()]
    if unknown := sorted(set(faults) - set(FAULTS)):
        raise argparse.ArgumentTypeError(f"unknown faults {unknown}: choose among {', '.join(FAULTS)}")
    return faults


class OnRabbitMQCluster:
    """A RabbitMQ cluster and a PostgreSQL cluster of the soak's own, removed at the end."""

    broker_outage_name = "RabbitMQ cluster node faults"

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.cluster = RabbitMQCluster(app_hosts=tuple(LAYOUT))
        self.database = PostgreSQLCluster(DATABASE_CLUSTER, listen=BRIDGE_ADDRESS, clients=f"{SUBNET}.0/24",
                                          options=DATABASE_OPTIONS)

    def start(self) -> dict[str, str]:
        self.database.drop()  # an interrupted run's
        started = time.monotonic()
        self.cluster.start()
        say(f"RabbitMQ cluster {', '.join(node.name for node in self.cluster.nodes)} running after "
            f"{time.monotonic() - started:.0f}s (nodes up in {self.cluster.timings['nodes running']:.0f}s, "
            f"clustered in {self.cluster.timings['cluster formed']:.0f}s; data in {self.cluster.folder})")
        database_url = self.database.create()
        say(f"PostgreSQL cluster {self.database.name} on {BRIDGE_ADDRESS}:{self.database.port}")
        return {"CELERY_BROKER_URL": self.cluster.broker_url(), "DATABASE_URL": database_url, **CLUSTER_SETTINGS}

    def messages_in_queues(self) -> bool:
        """Any message waiting or taken but not acknowledged, in any queue of the vhost."""
        return any(queue["messages"] for queue in self.cluster.queues())

    def stop(self) -> None:
        try:
            self.cluster.close(keep_logs_in=self.logs)  # beside the platform's: bus1.log, ...
        finally:
            self.database.drop()


class ClusterPlatform(Platform):
    """The platform's processes on the app hosts (``LAYOUT``); a role is ``<host>.<process>``."""

    def __init__(self, group, services: OnRabbitMQCluster) -> None:
        super().__init__(group)
        self.cluster = services.cluster

    def roles(self) -> list[str]:
        return [f"{host}.{process}" for host, processes in LAYOUT.items() for process in processes]

    def start(self, role: str) -> None:
        host, process = role.split(".", 1)
        first = list(LAYOUT).index(host) % len(self.cluster.nodes)
        with self.lock:
            self.starts[role] += 1
            name = f"{role}.{self.starts[role]}"
            if process == "relay":
                argv, ready = [sys.executable, "manage.py", "relay"], "relay: publishing"
            else:
                argv, ready = [sys.executable, "-m", "workers", process.removeprefix("worker-"),
                               "--concurrency=2", "--without-gossip", "--without-mingle"], " ready."
            self.group.start(name, self.cluster.hosts.command(host, argv), ready_line=ready,
                             env={"CELERY_BROKER_URL": self.cluster.broker_url(first)})
            self.group.processes[role] = self.group.processes.pop(name)

    def start_all(self) -> None:
        for role in self.roles():
            self.start(role)
        deadline = time.monotonic() + 180
        while not all(self.group.ready_lines[f"{role}.1"] in self.log(role) for role in self.roles()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after 180 s; logs in {self.group.logs}")
            for role, process in self.group.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{role} exited at start:\n{self.log(role)[-3000:]}")
            time.sleep(0.5)
        say("platform running: " + ", ".join(f"{role} {pid}" for role, pid in self.group.pids().items()))


@dataclasses.dataclass
class Fault:
    what: str
    started: float  # time.time()
    ended: float = 0.0
    node_fault: bool = False  # a broker node's: the flow must come back before it ends


class ClusterMonkey(threading.Thread):
    """The cluster's faults, one at a time, with quiet spells between; sets ``done`` at the end."""

    def __init__(self, services: OnRabbitMQCluster, *, outage: float, partition: float, quiet: float,
                 faults: list[str]) -> None:
        super().__init__(name="chaos-cluster-monkey", daemon=True)
        self.cluster, self.hosts = services.cluster, services.cluster.hosts
        self.outage, self.partition, self.quiet = outage, partition, quiet
        self.done = threading.Event()
        self.records: list[Fault] = []
        self.faults: collections.Counter[str] = collections.Counter()
        self.error: str | None = None
        self.load_started = time.time()
        self.schedule = [getattr(self, FAULTS[name]) for name in faults]

    def run(self) -> None:
        try:
            time.sleep(self.quiet)
            for fault in self.schedule:
                fault()
                self.faults[self.records[-1].what.split(":")[0]] += 1
                self._wait_whole()
                time.sleep(self.quiet)
        except Exception:
            self.error = traceback.format_exc()
            say(f"the fault schedule failed:\n{self.error}")
        finally:
            self.done.set()

    def _begin(self, what: str, *, node_fault: bool = False) -> Fault:
        say(what)
        self.records.append(Fault(what, time.time(), node_fault=node_fault))
        return self.records[-1]

    def _end(self, fault: Fault, what: str) -> None:
        fault.ended = time.time()
        say(f"{what} ({fault.ended - fault.started:.1f}s after the fault)")

    def follower_stopped(self) -> None:
        leader = self.cluster.leader(QUEUE)
        follower = next(node for node in self.cluster.nodes if node is not leader)
        fault = self._begin(f"follower stopped: {follower.name} (stop_app; {QUEUE} led by {leader.name})",
                            node_fault=True)
        follower.ctl("stop_app")
        time.sleep(self.outage)
        follower.ctl("start_app")
        follower.ctl("await_startup")
        self._end(fault, f"{follower.name} started again")

    def leader_killed(self) -> None:
        leader = self.cluster.leader(QUEUE)
        fault = self._begin(f"leader killed: {leader.name}, leader of {QUEUE} (SIGKILL)", node_fault=True)
        leader.kill()
        time.sleep(self.outage)
        leader.start()
        leader.wait_running()
        self._end(fault, f"{leader.name} running again")
        say(f"{QUEUE} now led by {self.cluster.leader(QUEUE).name}")

    def node_partitioned(self) -> None:
        node = self._busiest()
        fault = self._begin(f"node partitioned: {node.name} cut off from the other nodes and the clients "
                            f"for {self.partition:.0f}s", node_fault=True)
        with self.hosts.cut(node.host):
            time.sleep(self.partition)
        self._end(fault, f"{node.name}'s network back")

    def worker_host_cut_off(self) -> None:
        self._host_cut_off("worker", WORKER_HOST)

    def relay_host_cut_off(self) -> None:
        self._host_cut_off("relay", RELAY_HOST)

    def _host_cut_off(self, kind: str, host: str) -> None:
        fault = self._begin(f"{kind} host cut off: {host} ({', '.join(LAYOUT[host])}) for {self.outage:.0f}s")
        with self.hosts.cut(host):
            time.sleep(self.outage)
        self._end(fault, f"{host}'s network back")

    def _busiest(self) -> Node:
        """The node leading the most queues."""
        leaders = collections.Counter(queue["leader"] for queue in self.cluster.queues() if queue.get("leader"))
        return self.cluster.node(leaders.most_common(1)[0][0])

    def _wait_whole(self, timeout: float = 120) -> None:
        """Until the three nodes run together again (a paused minority resumes by itself)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if len(self.cluster.running_nodes()) == len(self.cluster.nodes):
                    return
            except Exception as exc:  # a node still starting
                say(f"cluster not whole yet ({type(exc).__name__})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not whole {timeout:.0f}s after the fault")
            time.sleep(1)


@dataclasses.dataclass
class Recovery:
    fault: Fault
    messages: int
    longest_wait: float
    recovered_after: float  # from the fault's start; 0: nothing was held up
    worst: str = ""  # the message that waited longest, and its consumer

    @property
    def lasted(self) -> float:
        return self.fault.ended - self.fault.started

    @property
    def within_failover(self) -> bool:
        return self.recovered_after < self.lasted


def recoveries(monkey: ClusterMonkey) -> tuple[dict[str, float], list[Recovery]]:
    """The quiet spell's waits (median, longest) and, per fault, how long the flow stalled."""
    from messaging.models import InboxMessage, OutboxMessage

    sent = {message_id: max(created, available).timestamp() for message_id, created, available in
            OutboxMessage.objects.filter(published_at__isnull=False)
            .values_list("message_id", "created_at", "available_at")}
    waits = [(sent[message_id], handled.timestamp(), f"{message_type} → {consumer}")
             for message_id, handled, message_type, consumer in
             InboxMessage.objects.values_list("message_id", "handled_at", "message_type", "consumer")
             if message_id in sent]
    first = monkey.records[0].started if monkey.records else time.time()
    quiet = [handled - at for at, handled, _ in waits if monkey.load_started <= at < first - BEFORE] or [0.0]
    baseline = {"median": statistics.median(quiet), "longest": max(quiet), "messages": len(quiet)}
    held_up = baseline["longest"] + 1.0
    found = []
    for fault in monkey.records:
        window = [(at, handled, what) for at, handled, what in waits
                  if fault.started - BEFORE <= at <= (fault.ended or time.time()) + AFTER]
        delayed = [handled for at, handled, _ in window if handled - at > held_up]
        at, handled, what = max(window, key=lambda wait: wait[1] - wait[0], default=(0.0, 0.0, ""))
        found.append(Recovery(fault, messages=len(window), longest_wait=handled - at, worst=what,
                              recovered_after=max(delayed) - fault.started if delayed else 0.0))
    return baseline, found


def replicated_everywhere(cluster: RabbitMQCluster) -> tuple[int, list[str]]:
    """How many durable queues of the bus have fewer members than the cluster has nodes (a
    classic queue has one: its home node); their names and types."""
    short = [f"{queue['name']} ({queue['type']}" + (f", {len(queue['members'])} members)" if queue.get("members")
                                                    else ", on one node)")
             for queue in cluster.queues()
             # Not the workers' own transient queues (remote control, events), which go with their connection.
             if queue["durable"] and len(queue.get("members") or []) < len(cluster.nodes)]
    return len(short), short


def liveness() -> dict[str, int]:
    """How many processes of each worker and of the relay report themselves alive (own files)."""
    from django.conf import settings

    from messaging.health import read_healths

    return {name: sum(1 for health in read_healths(name) if not health.problem(max_age=settings.BUS_HEALTH_INTERVAL * 4))
            for name in [*(f"worker-{context}" for context in CONTEXTS), "relay"]}


def soak(options: argparse.Namespace, rng, services: OnRabbitMQCluster, logs: Path):
    """Start the platform on the cluster, run the load through the faults, settle, measure."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
    import django

    django.setup()
    from django.core.management import call_command

    from bench.chaos import Load, Report, _settle
    from bench.processes import ProcessGroup

    call_command("migrate", verbosity=0)
    platform = ClusterPlatform(ProcessGroup(dict(os.environ), logs), services)
    try:
        platform.start_all()
        alive_at_start = liveness()
        faults = options.faults
        monkey = ClusterMonkey(services, outage=options.outage, partition=options.partition, quiet=options.quiet,
                               faults=faults)
        # Enough stock for the whole soak (it sells at most three of a product per line).
        expected_seconds = (len(faults) + 1) * (options.quiet + options.outage) + options.partition + 90
        load = Load(rng, products=options.products,
                    stock=max(10, int(expected_seconds * options.checkouts * 3 / options.products)))
        monkey.load_started = time.time()
        monkey.start()
        load.run(float("inf"), checkouts_per_second=options.checkouts,
                 price_changes_per_second=options.price_changes, until=monkey.done)
        monkey.join()
        platform.ensure_running()
        settled = _settle(load, services, timeout=options.settle)
        if not settled:
            _dump_what_is_stuck(platform, services, logs)
        report = Report.measure(load, monkey, platform, settled=settled)
        baseline, found = recoveries(monkey)
        short, short_names = replicated_everywhere(services.cluster)
        report.checks["fault schedule failed"] = 1 if monkey.error else 0
        report.checks["stopped or killed nodes that stalled the flow for the whole fault"] = sum(
            1 for recovery in found if recovery.fault.node_fault and not recovery.within_failover
            and not recovery.fault.what.startswith("node partitioned"))
        report.checks[PARTITION_CHECK] = sum(
            1 for recovery in found if recovery.fault.what.startswith("node partitioned")
            and not recovery.within_failover)
        report.checks["queues of the bus on fewer than three nodes"] = short
        alive_at_end = liveness()
        report.checks["contexts or relays without two live processes, at start or end"] = sum(
            1 for alive in [*alive_at_start.values(), *alive_at_end.values()] if alive < 2)
        report.sections.append(_recovery_text(baseline, found, short_names, alive_at_start, alive_at_end))
        return report
    finally:
        platform.stop()


def _dump_what_is_stuck(platform: ClusterPlatform, services: OnRabbitMQCluster, logs: Path) -> None:
    """The queues still holding messages, and every platform process's Python stack (py-spy,
    where installed), into ``stuck.txt`` beside the logs: what held the last messages."""
    lines = []
    try:
        lines += [f"{queue['name']}: {queue['messages']} message(s)" for queue in services.cluster.queues()
                  if queue["messages"]]
    except Exception as exc:
        lines.append(f"queues: {exc}")
    if shutil.which("py-spy"):
        for role, process in platform.group.processes.items():
            children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
            for pid in [str(process.pid), *children]:
                dump = subprocess.run(["py-spy", "dump", "--pid", pid], capture_output=True, text=True, timeout=60)
                lines += [f"== {role} pid {pid}", dump.stdout or dump.stderr]
    (logs / "stuck.txt").write_text("\n".join(lines))
    say(f"not settled: queues and stacks in {logs / 'stuck.txt'}")


def _recovery_text(baseline: dict, found: list[Recovery], short_names: list[str], alive: dict[str, int],
                   alive_at_end: dict[str, int]) -> list[str]:
    lines = ["  the flow through each fault (a message's wait: outbox row to inbox row):",
             f"    quiet spell: {baseline['messages']} deliveries, median wait {baseline['median']:.2f}s, "
             f"longest {baseline['longest']:.2f}s"]
    for recovery in found:
        verdict = "no stall" if not recovery.recovered_after else \
            f"flow recovered {recovery.recovered_after:.1f}s after the fault's start"
        if recovery.recovered_after and recovery.fault.node_fault:
            verdict += " (before the node was back)" if recovery.within_failover else " (NOT before the node was back)"
        lines += [f"    {recovery.fault.what}",
                  f"      lasted {recovery.lasted:.1f}s; {recovery.messages} deliveries around it; "
                  f"longest wait {recovery.longest_wait:.1f}s ({recovery.worst}); {verdict}"]
    lines.append("  live processes (each its own liveness file), at start: "
                 + ", ".join(f"{name} ×{count}" for name, count in alive.items()))
    lines.append("  and at the end: " + ", ".join(f"{name} ×{count}" for name, count in alive_at_end.items()))
    if short_names:
        lines.append("  queues of the bus on fewer than three nodes: " + ", ".join(short_names))
    return lines

