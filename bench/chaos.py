"""``python -m bench chaos``: a chaos soak of the platform on RabbitMQ or Redis, and PostgreSQL.

For a set time it places orders (basket → ordering → catalog → payment) and
changes prices through the contexts' own services, while it SIGKILLs workers,
pool processes and the relay at random and starts them again, takes the broker
down once and stops PostgreSQL once. Then it lets the platform settle and
checks what is promised: every message had its effect once per consumer (none
lost, none twice), nothing was dead-lettered, every order ended Paid or
Cancelled with at most one payment and one reservation, and no stock was
oversold. It prints the figures and exits non-zero when a check fails.

On RabbitMQ (the default) it stops the RabbitMQ node (``RABBITMQ_NODENAME``,
else the default) and the PostgreSQL cluster (by the port of ``DATABASE_URL``)
that the environment names, and works in a vhost and a database of its own
beside the named ones, made afresh each run. ``scripts/services`` starts a
private pair if the default ones are shared.

With ``--broker redis`` it touches no service anyone else uses: it starts a
redis-server of its own (AOF, ``appendfsync everysec``) and a PostgreSQL
cluster of its own, runs the platform on them, and removes both at the end.
The broker's outage is a SIGKILL of redis-server, started again after
``--outage`` seconds on the same port and data (its append-only file keeps
what it had answered). A killed worker's message comes back on Redis only
after the visibility timeout, so the soak shortens it, and the time limits
under it (``REDIS_SETTINGS``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from bench.processes import ROOT, ProcessGroup
from tests.own_services import PostgreSQLCluster, fresh_vhost_and_database

CONTEXTS = ("catalog", "basket", "ordering", "payment")
#: Payments above this are declined, so some orders are cancelled after their stock was reserved.
APPROVAL_LIMIT = "150.00"


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of load and faults (default 600)")
    parser.add_argument("--checkouts", type=float, default=4.0, help="checkouts per second (default 4)")
    parser.add_argument("--price-changes", type=float, default=4.0, help="price changes per second (default 4)")
    parser.add_argument("--products", type=int, default=40, help="products in the catalog (default 40)")
    parser.add_argument("--kill-every", type=float, default=10.0,
                        help="mean seconds between two process kills (default 10)")
    parser.add_argument("--outage", type=float, default=15.0,
                        help="seconds the broker is down, and then PostgreSQL (default 15)")
    parser.add_argument("--settle", type=float, default=600.0,
                        help="longest wait, in seconds, for the platform to finish after the load (default 600)")
    parser.add_argument("--seed", type=int, help="random seed (default: from the clock; printed)")
    parser.add_argument("--broker", choices=("rabbitmq", "redis"), default="rabbitmq",
                        help="rabbitmq: the node and cluster the environment names; redis: a redis-server "
                             "and a PostgreSQL cluster of the soak's own (default rabbitmq)")
    from bench import chaos_cluster

    chaos_cluster.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    options = parse_arguments(argv)
    seed = options.seed if options.seed is not None else int(time.time())
    rng = random.Random(seed)
    command = " ".join(["python -m bench chaos", *argv])
    say(f"{command}  (seed {seed})")
    logs = Path(tempfile.mkdtemp(prefix="chaos-logs-"))
    if options.cluster:
        from bench import chaos_cluster

        services, run_soak = chaos_cluster.OnRabbitMQCluster(logs), chaos_cluster.soak
    else:
        services, run_soak = OnRedis(logs) if options.broker == "redis" else OnRabbitMQ(), soak
    try:
        os.environ.update({
            **services.start(),
            "DJANGO_SETTINGS_MODULE": "config.settings.local", "DJANGO_DEBUG": "false",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]),
            "PAYMENT_APPROVAL_LIMIT": APPROVAL_LIMIT,
            # Retries a few seconds apart, as in the integration tests.
            "BUS_RETRY_BACKOFF": "0.5", "BUS_RETRY_BACKOFF_MAX": "4",
        })
        report = run_soak(options, rng, services, logs)
    finally:
        services.stop()
    print(report.text(command=command, seed=seed, logs=logs), flush=True)
    sys.exit(0 if report.passed else 1)


def soak(options: argparse.Namespace, rng: random.Random, services: OnRabbitMQ | OnRedis, logs: Path) -> Report:
    sys.path.insert(0, str(ROOT / "platform"))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    platform = Platform(ProcessGroup(dict(os.environ), logs))
    try:
        platform.start_all()
        load = Load(rng, products=options.products,
                    stock=max(10, int(options.duration * options.checkouts * 3 / options.products)))
        monkey = Monkey(platform, services, random.Random(rng.random()), kill_every=options.kill_every,
                        outage=options.outage, duration=options.duration)
        monkey.start()
        load.run(options.duration, checkouts_per_second=options.checkouts,
                 price_changes_per_second=options.price_changes)
        monkey.join()
        platform.ensure_running()
        settled = _settle(load, services, timeout=options.settle)
        return Report.measure(load, monkey, platform, settled=settled)
    finally:
        platform.stop()


class OnRabbitMQ:
    """The RabbitMQ node and PostgreSQL cluster the environment names, in a vhost and a database of the soak's own."""

    broker_outage_name = "RabbitMQ stopped"

    def start(self) -> dict[str, str]:
        broker_url, database_url = fresh_vhost_and_database(
            os.environ["CELERY_BROKER_URL"], os.environ["DATABASE_URL"], suffix="chaos")
        return {"CELERY_BROKER_URL": broker_url, "DATABASE_URL": database_url}

    def broker_outage(self):
        from tests.integration.rabbitmq import broker_stopped

        return broker_stopped()

    def messages_in_queues(self) -> bool:
        """Any message waiting or taken but not acknowledged, in any queue of the vhost."""
        from tests.integration.rabbitmq import rabbitmqctl

        return any(q["messages"] for q in rabbitmqctl("list_queues", "name", "messages"))

    def stop(self) -> None:
        pass


#: Redis hands a killed worker's message to another one only after the visibility
#: timeout (900 s by default). The soak waits for every message, so it shortens the
#: timeout, and the time limits it must outlast (manage.py check, messaging.E011):
#: twice the time limit, and the time limit plus BUS_RETRY_BACKOFF_MAX (4 s). A worker
#: holds a message while the database is down for BUS_DATABASE_WAIT, well under the
#: soft limit.
REDIS_SETTINGS = {"BUS_REDIS_VISIBILITY_TIMEOUT": "15", "CELERY_TASK_TIME_LIMIT": "6",
                  "CELERY_TASK_SOFT_TIME_LIMIT": "5", "BUS_DATABASE_WAIT": "2"}


class OnRedis:
    """A redis-server and a PostgreSQL cluster of the soak's own, removed at the end."""

    broker_outage_name = "Redis killed and restarted"

    def __init__(self, logs: Path) -> None:
        from tests.integration.redis import RedisServer

        self.redis = RedisServer(logs / "redis-server")
        self.cluster = PostgreSQLCluster(f"chaos_{os.getpid()}")

    def start(self) -> dict[str, str]:
        database_url = self.cluster.create()
        self.redis.start()
        say(f"redis-server {self.redis.url} (data in {self.redis.folder}), "
            f"PostgreSQL cluster {self.cluster.name} on port {self.cluster.port}")
        return {"CELERY_BROKER_URL": self.redis.url, "DATABASE_URL": database_url, **REDIS_SETTINGS}

    @contextlib.contextmanager
    def broker_outage(self):
        """SIGKILL: nothing gets to flush or save; then the same port and data again."""
        self.redis.kill()
        try:
            yield
        finally:
            self.redis.start()

    def messages_in_queues(self) -> bool:
        """Any message waiting in a queue, or taken and not acknowledged (the adapter counts both)."""
        from messaging import brokers
        from messaging.topology import Topology

        broker = brokers.current()
        with broker.connection() as connection:
            names = [queue.name for queue in Topology(broker=broker).queues()]
            return any(broker.queue_depths(connection.default_channel, names).values())

    def stop(self) -> None:
        self.redis.stop()
        self.cluster.drop()


def say(line: str) -> None:
    print(f"chaos: {time.strftime('%H:%M:%S')} {line}", flush=True)


class Platform:
    """The platform's processes: a worker per context (two pool processes each) and the relay."""

    def __init__(self, group: ProcessGroup) -> None:
        self.group = group
        self.starts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def start(self, role: str) -> None:
        with self.lock:
            self.starts[role] += 1
            name = f"{role}.{self.starts[role]}"  # a log of its own per start
            if role == "relay":
                self.group.start(name, [sys.executable, "manage.py", "relay"], ready_line="relay: publishing")
            else:
                self.group.start(name, [sys.executable, "-m", "workers", role.removeprefix("worker-"),
                                        "--concurrency=2", "--without-gossip", "--without-mingle"],
                                 ready_line=" ready.")
            self.group.processes[role] = self.group.processes.pop(name)

    def start_all(self) -> None:
        for context in CONTEXTS:
            self.start(f"worker-{context}")
        self.start("relay")
        deadline = time.monotonic() + 120
        while not all(" ready." in self.log(f"worker-{c}") for c in CONTEXTS):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after 120 s; logs in {self.group.logs}")
            time.sleep(0.5)
        say("platform running: " + ", ".join(f"{role} {pid}" for role, pid in self.group.pids().items()))

    def log(self, role: str) -> str:
        return self.group.log(f"{role}.{self.starts[role]}")

    def kill(self, role: str) -> None:
        """SIGKILL the process and its pool processes (a session of its own) and start it again."""
        with self.lock:
            process = self.group.processes[role]
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.start(role)

    def kill_pool_process(self, role: str, rng: random.Random) -> bool:
        children = subprocess.run(["pgrep", "-P", str(self.group.processes[role].pid)],
                                  capture_output=True, text=True).stdout.split()
        if not children:
            return False
        os.kill(int(rng.choice(children)), signal.SIGKILL)
        return True

    def ensure_running(self) -> None:
        for role, process in list(self.group.processes.items()):
            if process.poll() is not None:
                say(f"{role} had exited ({process.returncode}); starting it again")
                self.start(role)

    def all_logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.group.logs.glob("*.log"))

    def stop(self) -> None:
        self.group.stop()


class Monkey(threading.Thread):
    """Kills processes at random; takes the broker down once (at 30 %) and stops PostgreSQL once (at 60 %)."""

    def __init__(self, platform: Platform, services: OnRabbitMQ | OnRedis, rng: random.Random, *,
                 kill_every: float, outage: float, duration: float) -> None:
        super().__init__(name="chaos-monkey", daemon=True)
        self.platform, self.rng, self.kill_every, self.outage = platform, rng, kill_every, outage
        self.deadline = time.monotonic() + duration
        self.outages = [(time.monotonic() + 0.3 * duration, services.broker_outage_name, services.broker_outage),
                        (time.monotonic() + 0.6 * duration, "PostgreSQL stopped", self._database_stopped)]
        self.faults: collections.Counter[str] = collections.Counter()

    @staticmethod
    def _database_stopped():
        from tests.integration.postgresql import database_stopped

        return database_stopped()

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            time.sleep(min(self.rng.expovariate(1 / self.kill_every), max(0.0, self.deadline - time.monotonic())))
            if self.outages and time.monotonic() >= self.outages[0][0]:
                _, fault, outage = self.outages.pop(0)
                say(f"{fault}: down for {self.outage:.0f}s")
                with outage():
                    time.sleep(self.outage)
                say(f"{fault}: up again")
                self.faults[fault] += 1
                continue
            if time.monotonic() >= self.deadline:
                break
            role = self.rng.choice([f"worker-{c}" for c in CONTEXTS] + ["relay"])
            if role != "relay" and self.rng.random() < 0.5:
                if self.platform.kill_pool_process(role, self.rng):
                    say(f"SIGKILL a pool process of {role}")
                    self.faults["pool process killed"] += 1
                continue
            say(f"SIGKILL {role} (and its pool), started again")
            self.platform.kill(role)
            self.faults["relay killed" if role == "relay" else "worker killed"] += 1


class Load:
    """Checkouts (a new customer each, one to three lines) and price changes, through the services."""

    def __init__(self, rng: random.Random, *, products: int, stock: int) -> None:
        from apps.catalog.services import product_create

        self.rng, self.stock = rng, stock
        self.skus = [f"CHAOS-{n:03}" for n in range(products)]
        for sku in self.skus:
            product_create(sku=sku, name=sku, price=self._price(), stock=stock)
        self.orders: list = []
        self.price_changes = 0
        self.refused: collections.Counter[str] = collections.Counter()

    def _price(self) -> Decimal:
        return Decimal(self.rng.randrange(500, 5000)) / 100

    def run(self, duration: float, *, checkouts_per_second: float, price_changes_per_second: float,
            until: threading.Event | None = None) -> None:
        """For ``duration`` seconds, or until ``until`` is set."""
        from django.db import close_old_connections

        started = time.monotonic()
        rate = checkouts_per_second + price_changes_per_second
        customers = calls = 0
        while (elapsed := time.monotonic() - started) < duration and not (until and until.is_set()):
            calls += 1
            close_old_connections()  # as Django does per request: drop a session the database cut
            try:
                if self.rng.random() < checkouts_per_second / rate:
                    customers += 1
                    self.orders.append(self._checkout(f"chaos-{customers}"))
                else:
                    self._change_a_price()
                    self.price_changes += 1
            except Exception as exc:
                # The database is down (the service call changes nothing and sends nothing).
                self.refused[type(exc).__name__] += 1
                time.sleep(0.2)
            ahead = calls / rate - elapsed
            if ahead > 0:
                time.sleep(ahead)

    def _checkout(self, customer: str):
        from apps.basket.services import basket_add_item, basket_checkout
        from apps.catalog.models import Product

        for sku in self.rng.sample(self.skus, self.rng.randint(1, 3)):
            basket_add_item(customer_id=customer, sku=sku, quantity=self.rng.randint(1, 3),
                            unit_price=Product.objects.get(sku=sku).price)
        return basket_checkout(customer_id=customer)

    def _change_a_price(self) -> None:
        from apps.catalog.services import product_change_price

        product_change_price(sku=self.rng.choice(self.skus), new_price=self._price())


def _settle(load: Load, services: OnRabbitMQ | OnRedis, *, timeout: float) -> bool:
    """Wait until nothing is left to do: outbox published, queues empty, every order terminal."""
    from django.db import close_old_connections

    from apps.ordering.models import Order
    from messaging.models import OutboxMessage

    say("load over; waiting for the platform to settle")
    deadline, quiet_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        close_old_connections()
        try:
            busy = (OutboxMessage.objects.due().exists()
                    or Order.objects.filter(status__in=[Order.Status.AWAITING_STOCK,
                                                        Order.Status.AWAITING_PAYMENT]).exists()
                    or Order.objects.count() < len(load.orders)
                    or services.messages_in_queues())
        except Exception as exc:
            say(f"not settled yet ({type(exc).__name__})")
            busy = True
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 5:  # quiet twice, 5 s apart: no retry was still waiting
            say("settled")
            return True
        time.sleep(1)
    say(f"not settled after {timeout:.0f}s")
    return False


class Report:
    """What happened, and the checks: each a name and the offending count (0 passes)."""

    def __init__(self) -> None:
        self.figures: dict[str, object] = {}
        self.checks: dict[str, int] = {}
        #: More lines to print before the checks (the cluster form's recovery times).
        self.sections: list[list[str]] = []
        #: The messages behind a lost or duplicated count, to look for in the logs.
        self.offenders: list[str] = []

    @property
    def passed(self) -> bool:
        return not any(self.checks.values())

    @classmethod
    def measure(cls, load: Load, monkey: Monkey, platform: Platform, *, settled: bool) -> Report:
        from django.db.models import Count, Q

        from apps.catalog.models import Product, StockReservation
        from apps.ordering.models import Order, PriceListEntry
        from apps.payment.models import Payment
        from messaging.models import DeadLetter, InboxMessage, OutboxMessage
        from messaging.registry import registry

        report = cls()
        consumers = collections.defaultdict(set)
        for handler in registry.handlers:
            consumers[handler.message_type].add(handler.name)
        # Only messages whose time has come: a checkout's deadline (ExpireOrder) waits
        # in the outbox for CHECKOUT_DEADLINE, longer than a soak.
        published = OutboxMessage.objects.filter(published_at__isnull=False)
        expected = {(message_id, consumer)
                    for message_id, message_type in published.values_list("message_id", "message_type")
                    for consumer in consumers[message_type]}
        applied = collections.Counter(InboxMessage.objects.values_list("message_id", "consumer"))
        dead = set(DeadLetter.objects.values_list("message_id", flat=True))
        orders = Order.objects.aggregate(total=Count("id"), paid=Count("id", filter=Q(status=Order.Status.PAID)),
                                         cancelled=Count("id", filter=Q(status=Order.Status.CANCELLED)))
        # A consumer is named '<context>:<message type>' (messaging.registry).
        absorbed = sum(len(re.findall(r"'[\w.]+:[\w.]+'", found))
                       for found in re.findall(r"'duplicates': \[([^\]]+)\]", platform.all_logs()))
        report.figures = {
            "checkouts placed": len(load.orders),
            "price changes": load.price_changes,
            "service calls refused (database down)": sum(load.refused.values()),
            "orders paid / cancelled": f"{orders['paid']} / {orders['cancelled']}",
            "messages sent (outbox rows)": OutboxMessage.objects.count(),
            "deliveries due (message, consumer)": len(expected),
            "effects applied (inbox rows)": sum(applied.values()),
            "redeliveries absorbed by the inbox": absorbed,
            "faults": ", ".join(f"{what} ×{count}" for what, count in sorted(monkey.faults.items())),
        }
        reserved = collections.Counter()
        for reservation in StockReservation.objects.filter(status=StockReservation.Status.RESERVED):
            for line in reservation.lines:
                reserved[line["sku"]] += line["quantity"]
        products = {p.sku: p for p in Product.objects.all()}
        payments = Payment.objects.values("order_id").annotate(n=Count("id"))
        paid_ids = set(Order.objects.filter(status=Order.Status.PAID).values_list("id", flat=True))
        lost = sorted(pair for pair in expected if pair not in applied and pair[0] not in dead)
        duplicated = sorted(pair for pair, n in applied.items() if n > 1)
        messages = {row.message_id: row for row in
                    OutboxMessage.objects.filter(message_id__in=[message_id for message_id, _ in lost + duplicated])}
        report.offenders = [
            f"{what} {message_id} {messages[message_id].message_type} → {consumer} "
            f"(conversation {messages[message_id].correlation_id}, published {messages[message_id].published_at})"
            for what, pairs in (("lost", lost), ("duplicated", duplicated)) for message_id, consumer in pairs[:10]
        ]
        report.checks = {
            "settled in time": 0 if settled else 1,
            "lost (due, neither applied nor dead-lettered)": len(lost),
            "duplicated (applied more than once)": sum(n - 1 for n in applied.values() if n > 1),
            "applied without being due": sum(1 for pair in applied if pair not in expected),
            "dead-lettered": DeadLetter.objects.count(),
            "left unpublished in the outbox (due)": OutboxMessage.objects.due().count(),
            "checkouts without an order": len(set(load.orders) - set(Order.objects.values_list("id", flat=True))),
            "orders not Paid or Cancelled": orders["total"] - orders["paid"] - orders["cancelled"],
            "orders with more than one payment": sum(1 for p in payments if p["n"] > 1),
            "paid orders without a succeeded payment": len(paid_ids - set(
                Payment.objects.filter(status=Payment.Status.SUCCEEDED).values_list("order_id", flat=True))),
            "paid orders without their stock reserved": len(paid_ids - set(
                StockReservation.objects.filter(status=StockReservation.Status.RESERVED)
                .values_list("order_id", flat=True))),
            "stock still held for unpaid orders": StockReservation.objects.filter(
                status=StockReservation.Status.RESERVED).exclude(order_id__in=paid_ids).count(),
            "products oversold or miscounted (available + reserved ≠ initial)": sum(
                1 for sku, product in products.items() if product.stock_available + reserved[sku] != load.stock),
            "price lists behind the catalog": sum(
                1 for entry in PriceListEntry.objects.all()
                if (entry.price, entry.price_version) != (products[entry.sku].price, products[entry.sku].price_version)),
        }
        return report

    def text(self, *, command: str, seed: int, logs: Path) -> str:
        width = max(map(len, [*self.figures, *self.checks]))
        lines = [f"chaos soak: {command}  (seed {seed}; process logs in {logs})", ""]
        lines += [f"  {name:<{width}}  {value}" for name, value in self.figures.items()]
        for section in self.sections:
            lines += ["", *section]
        lines += ["", "  checks (0 passes):"]
        lines += [f"  {name:<{width}}  {count}{'' if not count else '   <-- FAILED'}"
                  for name, count in self.checks.items()]
        if self.offenders:
            lines += ["", "  the first lost and duplicated (message, consumer):"]
            lines += [f"  {offender}" for offender in self.offenders]
        lines += ["", "chaos: PASSED" if self.passed else "chaos: FAILED"]
        return "\n".join(lines)
