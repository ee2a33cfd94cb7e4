"""A three-node RabbitMQ cluster on this machine, each node on a "host" of its own (a
network namespace), and hosts for the platform's processes beside them: what the
cluster form of the chaos soak (``python -m bench chaos --cluster``) runs on.

``Hosts`` builds the network: a bridge, ``busbr0`` (10.77.0.1/24 on this machine's
side), and one network namespace per host, each joined to the bridge by a veth pair.
A host cut off (``cut_off``) has its bridge port taken down: its processes keep
running and their connections stay open, but no packet goes in or out until
``restore``. That is a host losing its network, not a process dying.

``RabbitMQCluster`` starts ``bus1@10.77.0.11``, ``bus2@10.77.0.12`` and
``bus3@10.77.0.13``, one per broker host (long names: the hosts are addresses),
with the Erlang cookie of the machine's default node (they run as the ``rabbitmq``
user, whose home holds it) and data, logs and configuration in a folder of their
own. Each host has its own network stack, so each node listens on the standard
ports there and never meets the developer's default node (rabbit@<hostname>, port
5672 on this machine). Nodes 2 and 3 join node 1; queues declared afterwards, the
platform's quorum queues, get a member on each of the three.

Everything is removed at the end (``close``), after a failed run too, and an
interrupted earlier run's leftovers (namespaces, bridge, nodes still running in
those namespaces) are removed before a start. Only one cluster runs on a machine
at a time: the names and addresses are fixed, so a start waits for a lock.

Needs root (namespaces, veths, a bridge), iproute2, and RabbitMQ's Debian package.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

BRIDGE = "busbr0"
SUBNET = "10.77.0"
#: This machine's address on the bridge: the hosts reach its PostgreSQL there.
BRIDGE_ADDRESS = f"{SUBNET}.1"
NAMESPACE_PREFIX = "bushost-"
LOCK_FILE = "/run/bus-rabbitmq-cluster.lock"
COOKIE_HOME = "/var/lib/rabbitmq"

#: Erlang's tick between nodes (default 60 s): a node cut off is seen as gone after
#: 0.75 to 1.25 times this. The soak cuts a node off for longer than that, so that the
#: partition is a real one (the minority pauses, under ``pause_minority``, and comes back
#: when it sees the majority again), yet short enough for a test. Quorum queues elect a
#: new leader sooner, on their own failure detector, whatever the tick; but what waits
#: on Mnesia (a binding declared) or on a queue member there (a basic.get) waits until
#: the node is declared down, so the relay's stall in a partition follows this tick.
NET_TICKTIME = 10

NODE_CONFIG = """\
listeners.tcp.default = 5672
# A node cut off from the majority stops serving clients until it sees the majority again,
# so no client is ever served from the minority side of a partition.
cluster_partition_handling = pause_minority
# No randomised wait before the node looks for its peers (it joins by join_cluster).
cluster_formation.randomized_startup_delay_range.min = 0
cluster_formation.randomized_startup_delay_range.max = 0
log.console = true
log.console.level = info
log.file.level = info
"""


def run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


class Hosts:
    """Network namespaces on a bridge, each a host with one address: ``10.77.0.<number>``."""

    def __init__(self) -> None:
        self.addresses: dict[str, str] = {}

    @staticmethod
    def namespace(host: str) -> str:
        return f"{NAMESPACE_PREFIX}{host}"

    @staticmethod
    def port(host: str) -> str:
        """The bridge's side of the host's veth pair (at most 15 characters: a Linux interface name)."""
        return f"vbus-{host}"[:15]

    def create_bridge(self) -> None:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")

    def add(self, host: str, number: int) -> str:
        """A host at ``10.77.0.<number>``; its address."""
        namespace, port, address = self.namespace(host), self.port(host), f"{SUBNET}.{number}"
        run("ip", "netns", "add", namespace)
        run("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        run("ip", "link", "set", port, "master", BRIDGE, "up")
        run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", namespace, "link", "set", "eth0", "up")
        # epmd and the CLI tools talk to the node over the loopback.
        run("ip", "-n", namespace, "link", "set", "lo", "up")
        self.addresses[host] = address
        return address

    def command(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` to run on ``host`` (in its namespace)."""
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def cut_off(self, host: str) -> None:
        """The host loses its network: its bridge port goes down (its side sees no carrier)."""
        run("ip", "link", "set", self.port(host), "down")

    def restore(self, host: str) -> None:
        run("ip", "link", "set", self.port(host), "up")

    @contextlib.contextmanager
    def cut(self, host: str):
        self.cut_off(host)
        try:
            yield
        finally:
            self.restore(host)

    @staticmethod
    def pids(host: str) -> list[int]:
        """Every process running on ``host``."""
        listed = run("ip", "netns", "pids", Hosts.namespace(host), check=False).stdout.split()
        return [int(pid) for pid in listed]

    @staticmethod
    def remove_all() -> None:
        """Every namespace of this module's (their processes killed first) and the bridge."""
        listed = run("ip", "netns", "list", check=False).stdout.split("\n")
        for namespace in [line.split()[0] for line in listed if line.startswith(NAMESPACE_PREFIX)]:
            host = namespace.removeprefix(NAMESPACE_PREFIX)
            for pid in Hosts.pids(host):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            run("ip", "link", "del", Hosts.port(host), check=False)
            run("ip", "netns", "del", namespace, check=False)
        run("ip", "link", "del", BRIDGE, check=False)


class Node:
    """One RabbitMQ node on a host of its own."""

    def __init__(self, cluster: RabbitMQCluster, number: int) -> None:
        self.cluster, self.number = cluster, number
        self.host = f"bus{number}"
        self.address = f"{SUBNET}.{10 + number}"
        self.name = f"bus{number}@{self.address}"
        self.folder = cluster.folder / self.host
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": COOKIE_HOME,  # its .erlang.cookie: the default node's cookie
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_USE_LONGNAME": "true",
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"-kernel net_ticktime {NET_TICKTIME}",
        }

    def prepare(self) -> None:
        for sub in ("mnesia", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "rabbitmq.conf").write_text(NODE_CONFIG)
        (self.folder / "advanced.config").write_text("[].\n")
        # No plugins: the management plugin would only slow the start (the soak reads
        # queues with rabbitmqctl).
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")
        user = pwd.getpwnam("rabbitmq")
        for path in [self.folder, *self.folder.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)

    def start(self) -> None:
        """Start the node (in the background: ``wait_running`` waits for it)."""
        log = open(self.folder / "log" / "console.log", "a")
        self.process = subprocess.Popen(
            self.cluster.hosts.command(self.host, [
                "setpriv", "--reuid=rabbitmq", "--regid=rabbitmq", "--init-groups",
                "/usr/lib/rabbitmq/bin/rabbitmq-server"]),
            env=self.environment(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.folder,
        )

    def ctl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """``rabbitmqctl`` on this node, run on its host."""
        completed = subprocess.run(
            self.cluster.hosts.command(self.host, [
                "setpriv", "--reuid=rabbitmq", "--regid=rabbitmq", "--init-groups",
                "/usr/lib/rabbitmq/bin/rabbitmqctl", "-q", "-n", self.name, *args]),
            env=self.environment(), capture_output=True, text=True, timeout=timeout, cwd=self.folder,
        )
        if check and completed.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.name} failed "
                               f"({completed.returncode}): {completed.stdout}{completed.stderr}")
        return completed.stdout

    def wait_running(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}); "
                                   f"log: {self.folder / 'log'}")
            if not self.ctl("await_startup", "--timeout", "5", check=False, timeout=30).strip() and \
                    self._running():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not running after {timeout:.0f}s; log: {self.folder / 'log'}")
            time.sleep(0.5)

    def _running(self) -> bool:
        try:
            return bool(json.loads(self.ctl("status", "--formatter", "json", timeout=30)).get("pid"))
        except (RuntimeError, ValueError):
            return False

    def beam_pid(self) -> int:
        """The node's Erlang VM."""
        for pid in Hosts.pids(self.host):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip().startswith("beam"):
                    return pid
        raise RuntimeError(f"no Erlang VM on {self.host}")

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM: no goodbye to its peers or its clients."""
        os.kill(self.beam_pid(), signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)


class RabbitMQCluster:
    """Three RabbitMQ nodes on three hosts, clustered, and hosts for the platform's processes."""

    def __init__(self, app_hosts: tuple[str, ...] = ("app1", "app2", "app3"), *,
                 user: str = "platform", password: str = "platform-cluster-test", vhost: str = "bus") -> None:
        self.app_hosts, self.user, self.password, self.vhost = app_hosts, user, password, vhost
        self.hosts = Hosts()
        self.folder = Path(tempfile.mkdtemp(prefix="bus-rabbitmq-cluster-"))
        self.folder.chmod(0o755)  # the nodes run as the rabbitmq user
        self.nodes = [Node(self, number) for number in (1, 2, 3)]
        self._lock = None
        #: Seconds the start took until the nodes ran, and until they formed the cluster.
        self.timings: dict[str, float] = {}

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Network, nodes (started together), the cluster, the platform's user and vhost."""
        self._lock = open(LOCK_FILE, "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        Hosts.remove_all()  # an interrupted run's
        self.hosts.create_bridge()
        for node in self.nodes:
            self.hosts.add(node.host, 10 + node.number)
            node.prepare()
        for number, host in enumerate(self.app_hosts, start=21):
            self.hosts.add(host, number)
        started = time.monotonic()
        for node in self.nodes:
            node.start()
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.wait_running(), self.nodes))
        self.timings["nodes running"] = time.monotonic() - started
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        running = self.running_nodes()
        if sorted(running) != sorted(node.name for node in self.nodes):
            raise RuntimeError(f"cluster not formed: running {running}")
        self.timings["cluster formed"] = time.monotonic() - started
        first.ctl("add_vhost", self.vhost)
        first.ctl("add_user", self.user, self.password)
        first.ctl("set_permissions", "-p", self.vhost, self.user, ".*", ".*", ".*")

    def close(self, *, keep_logs_in: Path | None = None) -> None:
        """Nodes killed, hosts and bridge removed, folder deleted (the nodes' logs copied to
        ``keep_logs_in`` first, as ``bus1.log``, ...); safe to call after a failed start."""
        try:
            Hosts.remove_all()
            for node in self.nodes:
                if node.process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        node.process.wait(timeout=10)
                if keep_logs_in is not None and (node.folder / "log" / "console.log").exists():
                    shutil.copy(node.folder / "log" / "console.log", keep_logs_in / f"{node.host}.log")
            shutil.rmtree(self.folder, ignore_errors=True)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def __enter__(self) -> RabbitMQCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what the platform needs ------------------------------------------------------------

    def broker_url(self, first: int = 0) -> str:
        """A failover URL naming the three nodes, starting with node ``first`` (0-based):
        hosts given different firsts spread their connections over the nodes."""
        order = self.nodes[first:] + self.nodes[:first]
        return ";".join(f"amqp://{self.user}:{self.password}@{node.address}:5672/{self.vhost}" for node in order)

    # -- what the cluster says ----------------------------------------------------------------

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def any_running(self, *, besides: Node | None = None) -> Node:
        """A node that answers (one that is up, and not cut off)."""
        for node in self.nodes:
            if node is not besides and node._running():
                return node
        raise RuntimeError("no node of the cluster answers")

    def running_nodes(self) -> list[str]:
        status = json.loads(self.any_running().ctl("cluster_status", "--formatter", "json"))
        return status["running_nodes"]

    def queues(self, *, via: Node | None = None) -> list[dict]:
        """Every queue of the vhost: name, type, leader, members, messages (ready and unacknowledged)."""
        node = via or self.any_running()
        return json.loads(node.ctl("list_queues", "-p", self.vhost, "name", "type", "durable", "leader", "members",
                                   "messages", "--formatter", "json"))

    def leader(self, queue: str) -> Node:
        """The node that leads quorum queue ``queue``."""
        [row] = [row for row in self.queues() if row["name"] == queue]
        return self.node(row["leader"])
