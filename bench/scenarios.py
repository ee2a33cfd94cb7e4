"""The scenarios: each measures the platform and its baseline in the same call.

A scenario returns a flat dict of figures (``platform``, ``baseline``,
``platform.p50`` ...). The order of the two runs alternates with the repeat,
so neither always runs on a warmer machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.catalog.messages import ProductPriceChanged, ReleaseStock
from bench import bare_celery, raw_relay
from bench.processes import ROOT, ProcessGroup
from messaging.delivery import consume
from messaging.models import InboxMessage, OutboxMessage
from messaging.outbox import Outbox
from messaging.registry import registry
from messaging.relay import Relay
from messaging.topology import Topology

#: The benchmarks publish the catalog's events in its name and send commands as the operator.
catalog = Outbox.for_context("catalog")
operator = Outbox.operator()

#: The subscribers of ProductPriceChanged, whose workers the event scenarios run.
SUBSCRIBERS = ("basket", "ordering")


@dataclasses.dataclass
class Sizes:
    """How much each scenario does: ``full`` for the results, ``smoke`` for CI."""

    relay_rows: int
    outbox_rows: int
    events: int
    commands: int
    latency_seconds: float
    latency_rate: float
    duplicates: int
    embedded_events: int
    #: Seconds of events at a steady 160 a second (320 handled) on the embedded default.
    embedded_steady_seconds: float
    concurrency_levels: tuple[int, ...]
    #: Events once more without task events and results (the "lean" figures).
    lean: bool = True


FULL = Sizes(relay_rows=20_000, outbox_rows=2_000, events=2_000, commands=2_000, latency_seconds=10,
             latency_rate=20, duplicates=2_000, embedded_events=500, embedded_steady_seconds=20,
             concurrency_levels=(1, 2, 4))
SMOKE = Sizes(relay_rows=300, outbox_rows=100, events=60, commands=60, latency_seconds=1,
              latency_rate=10, duplicates=50, embedded_events=20, embedded_steady_seconds=1,
              concurrency_levels=(1, 2))
#: The worker concurrency of the headline end-to-end figures (prefork -c2).
DEFAULT_CONCURRENCY = 2
#: The smoke on Redis starts the processes once (-c2): that runs every path Redis
#: changes; the other concurrency and the lean run differ from it only by settings.
SMOKE_ON_REDIS = dataclasses.replace(SMOKE, concurrency_levels=(DEFAULT_CONCURRENCY,), lean=False)


#: The scenarios that go through a broker: each runs on RabbitMQ and on Redis.
BROKER_SCENARIOS = ("relay", "end_to_end")


@dataclasses.dataclass
class Run:
    """What every scenario needs: sizes, where logs go, the processes' environment and broker."""

    sizes: Sizes
    env: dict[str, str]
    logs: Path
    repeat: int
    profiles: Path | None = None

    def baseline_first(self) -> bool:
        return self.repeat % 2 == 0

    @property
    def broker_url(self) -> str:
        return self.env["CELERY_BROKER_URL"]

    @property
    def services(self) -> dict[str, str]:
        """The services whose CPU time the end-to-end runs account for, by a word of their
        command line: PostgreSQL and the broker the run is on (never another's Redis)."""
        broker = urllib.parse.urlsplit(self.broker_url)
        if broker.scheme.startswith("redis"):
            # redis-server names its address in its process title.
            return {"postgres": "postgres", "redis": f"redis-server {broker.hostname}:{broker.port or 6379}"}
        return {"postgres": "postgres", "rabbitmq": "beam.smp"}


def interleaved(run: Run, platform: Callable[[], dict], baseline: Callable[[], dict]) -> dict:
    """Both measurements, in an order that alternates with the repeat."""
    first, second = (baseline, platform) if run.baseline_first() else (platform, baseline)
    return {**first(), **second()}


def rotated(run: Run, *measurements: Callable[[], dict]) -> dict:
    """Every measurement, each repeat starting with the next one: none always runs first or last."""
    start = run.repeat % len(measurements)
    figures = {}
    for measure in measurements[start:] + measurements[:start]:
        figures.update(measure())
    return figures


# -- helpers -------------------------------------------------------------------------------------

def empty_bus_tables() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {OutboxMessage._meta.db_table}, {InboxMessage._meta.db_table}")
        cursor.execute("TRUNCATE ordering_pricelistentry, django_celery_results_taskresult")


def purge_queues() -> None:
    from celery import current_app

    with current_app.connection_for_write() as conn:
        channel = conn.default_channel
        topology = Topology()
        topology.declare(channel)
        for queue in topology.queues():
            queue(channel).declare()
            queue(channel).purge()
    # Bare Celery's queues through its own app: on Redis that is kombu's transport, which
    # keeps a queue in a list; declared through the bus's, they would be streams, which
    # kombu's LLEN refuses (WRONGTYPE) and bare Celery's workers exit at start.
    for app in (bare_celery.app, bare_celery.by_hand):
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in app.conf.task_queues:
                queue(channel).declare()
                queue(channel).purge()


def price_changes(count: int, prefix: str = "BENCH") -> list[ProductPriceChanged]:
    # A SKU per event: the ordering subscriber writes a price-list row for each.
    return [ProductPriceChanged(sku=f"{prefix}-{i}", old_price=Decimal("10.00"), new_price=Decimal("12.50"),
                                price_version=1, currency="EUR") for i in range(count)]


#: What the platform's subscribers of a price change are named in the inbox (``<context>:<type>``):
#: basket's and ordering's, and no baseline's.
PRICE_SUBSCRIBERS = ":catalog.ProductPriceChanged"


def wait_for_rows(expected: int, *, consumer_like: str = "", timeout: float = 600) -> float:
    """Wait until the inbox holds ``expected`` rows; return the monotonic time it did."""
    rows = InboxMessage.objects.filter(consumer__contains=consumer_like)
    deadline = time.monotonic() + timeout
    while (count := rows.count()) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count} of {expected} messages handled after {timeout}s")
        time.sleep(0.02)
    return time.monotonic()


def percentiles(values: list[float], prefix: str) -> dict:
    ordered = sorted(values)
    quantiles = statistics.quantiles(ordered, n=100, method="inclusive")
    return {f"{prefix}.p50": quantiles[49], f"{prefix}.p90": quantiles[89], f"{prefix}.p99": quantiles[98],
            f"{prefix}.max": ordered[-1]}


def ms_since(handled_at, sent_at: float) -> float:
    return (handled_at.timestamp() - sent_at) * 1000


def py_spy(run: Run, name: str, pids: dict[str, int], seconds: float) -> list[subprocess.Popen]:
    """Profile processes (with their pool children) for ``seconds``; flame graphs in the profiles folder."""
    if run.profiles is None:
        return []
    return [
        subprocess.Popen(["py-spy", "record", "--subprocesses", "--nonblocking", "--rate", "200",
                          "--duration", str(int(seconds) + 1), "--pid", str(pid),
                          "--output", str(run.profiles / f"{name}-{process}.svg")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for process, pid in pids.items()
    ]


def cpu_seconds(started: dict[str, int], services: dict[str, str]) -> dict[str, float]:
    """CPU time (user + system) used so far by each process group, from /proc.

    The services by a word of their command line (``Run.services``); the bench's
    own processes (``started``: name to pid, pool children included) as workers,
    relay or bare workers.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    processes = {}  # pid: (parent pid, command, CPU seconds)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        processes[int(pid)] = (int(fields[1]), command, (int(fields[11]) + int(fields[12])) / ticks)
    used = dict.fromkeys([*services, "workers", "relay", "bare workers"], 0.0)
    groups = {pid: ("bare workers" if name.startswith("bare") else "relay" if name == "relay" else "workers")
              for name, pid in started.items()}
    for pid, (parent, command, cpu) in processes.items():
        group = groups.get(pid) or groups.get(parent)
        group = group or next((name for name, word in services.items() if word in command), None)
        if group:
            used[group] += cpu
    return used


def cpu_ms_per_message(before: dict[str, float], after: dict[str, float], messages: int, side: str) -> dict:
    """CPU milliseconds per handled message, by process group (processes alive at both ends),
    and of all groups together (``cpu_all``)."""
    groups = {f"cpu.{side}.{group}": (after[group] - before[group]) * 1000 / messages
              for group in after if after[group] > before[group]}
    return {**groups, f"cpu_all.{side}": sum(groups.values())}


def in_process_profile(run: Run, name: str, work: Callable[[], None]) -> None:
    """Run ``work`` under pyinstrument and keep its text report (only when profiling)."""
    if run.profiles is None:
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    with profiler:
        work()
    (run.profiles / f"{name}.txt").write_text(profiler.output_text(unicode=True, show_all=False))


# -- in-process scenarios ------------------------------------------------------------------------

def relay(run: Run) -> dict:
    """Rows per second published and confirmed, ``relay_rows`` rows waiting."""
    count = run.sizes.relay_rows

    def fill() -> None:
        empty_bus_tables()
        purge_queues()
        events = price_changes(count)
        for start in range(0, count, 1000):
            with transaction.atomic():
                catalog.publish_many(events[start:start + 1000])

    def platform() -> dict:
        fill()
        relay = Relay()
        started = time.monotonic()
        while relay.publish_batch():
            pass
        elapsed = time.monotonic() - started
        relay.close()
        published = OutboxMessage.objects.filter(published_at__isnull=False).count()
        assert published == count, f"the relay published {published} of {count}"
        return {"platform": count / elapsed}

    def baseline() -> dict:
        fill()
        loop = raw_relay.for_url(settings.CELERY_BROKER_URL)
        started = time.monotonic()
        published = loop.drain()
        elapsed = time.monotonic() - started
        loop.close()
        assert published == count, f"the raw loop published {published} of {count}"
        return {"baseline": count / elapsed}

    figures = interleaved(run, platform, baseline)
    if run.repeat == 0:
        fill()
        relay_for_profile = Relay()
        in_process_profile(run, "relay", lambda: [None for _ in iter(relay_for_profile.publish_batch, 0)])
        relay_for_profile.close()
    purge_queues()
    return figures


def outbox_writes(run: Run) -> dict:
    """Rows per second written: one per transaction, and many in one transaction."""
    count = run.sizes.outbox_rows
    events = price_changes(count)
    rows = [
        OutboxMessage(message_id=uuid.uuid4(), kind="event", message_type="catalog.ProductPriceChanged",
                      correlation_id=uuid.uuid4(), envelope={"data": e.model_dump(mode="json")})
        for e in events
    ]

    def timed(work: Callable[[], None]) -> float:
        empty_bus_tables()
        started = time.monotonic()
        work()
        return count / (time.monotonic() - started)

    def one_each_platform() -> None:
        for event in events:
            with transaction.atomic():
                catalog.publish(event)

    def one_each_baseline() -> None:
        for row in rows:
            with transaction.atomic():
                OutboxMessage(message_id=uuid.uuid4(), kind=row.kind, message_type=row.message_type,
                              correlation_id=row.correlation_id, envelope=row.envelope).save()

    def many_publish() -> None:
        with transaction.atomic():
            for event in events:
                catalog.publish(event)

    def many_publish_many() -> None:
        with transaction.atomic():
            catalog.publish_many(events)

    def many_baseline() -> None:
        with transaction.atomic():
            OutboxMessage.objects.bulk_create([
                OutboxMessage(message_id=uuid.uuid4(), kind=r.kind, message_type=r.message_type,
                              correlation_id=r.correlation_id, envelope=r.envelope) for r in rows
            ])

    one = interleaved(run, lambda: {"one.platform": timed(one_each_platform)},
                      lambda: {"one.baseline": timed(one_each_baseline)})
    many = interleaved(run, lambda: {"many.platform": timed(many_publish),
                                     "many.platform_many": timed(many_publish_many)},
                       lambda: {"many.baseline": timed(many_baseline)})
    if run.repeat == 0:
        in_process_profile(run, "outbox-publish-one-per-transaction", one_each_platform)
        in_process_profile(run, "outbox-publish-many-in-one-transaction", many_publish)
    empty_bus_tables()
    return {**one, **many}


def duplicates(run: Run) -> dict:
    """Milliseconds to recognise a message a consumer already handled."""
    count = run.sizes.duplicates
    empty_bus_tables()
    with transaction.atomic():
        envelope = catalog.publish(price_changes(1, prefix="DUPLICATE")[0]).to_json_dict()
    consume(envelope, context="basket")  # the first delivery: handled

    def platform() -> dict:
        started = time.monotonic()
        for _ in range(count):
            report = consume(envelope, context="basket")
        assert report["duplicates"] and not report["handled"], report
        return {"platform": (time.monotonic() - started) * 1000 / count}

    def baseline() -> dict:
        table, message_id = InboxMessage._meta.db_table, uuid.UUID(envelope["id"])
        started = time.monotonic()
        for _ in range(count):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {table} (message_id, consumer, message_type, handled_at) "
                    "VALUES (%s, %s, %s, now()) ON CONFLICT (message_id, consumer) DO NOTHING",
                    [message_id, "basket:catalog.ProductPriceChanged", "catalog.ProductPriceChanged"])
        return {"baseline": (time.monotonic() - started) * 1000 / count}

    figures = interleaved(run, platform, baseline)
    if run.repeat == 0:
        in_process_profile(run, "duplicate", lambda: [consume(envelope, context="basket") for _ in range(count)])
    return figures


# -- end to end, with worker processes -----------------------------------------------------------

class EndToEnd:
    """The platform's workers and relay beside bare Celery's workers, at one concurrency.

    Both sets run at once (an idle Celery worker costs next to nothing), so a
    repeat measures them one after the other without restarting anything.
    """

    def __init__(self, run: Run, concurrency: int, *, settings: dict[str, str] | None = None,
                 by_hand: bool = True, baselines: bool = True) -> None:
        self.run, self.concurrency = run, concurrency
        #: Whether "the same guarantees by hand" runs too (its workers started beside the others).
        self.by_hand = by_hand and baselines
        #: Whether bare Celery's workers run too (not when the platform is compared with itself).
        self.baselines = baselines
        self.group = ProcessGroup({**run.env, **(settings or {})}, run.logs)

    def __enter__(self) -> EndToEnd:
        purge_queues()
        empty_bus_tables()
        try:
            for context in (*SUBSCRIBERS, "catalog"):
                self.group.start_worker(context, concurrency=self.concurrency)
            self.group.start_relay()
            if self.baselines:
                for subscriber in SUBSCRIBERS:
                    self._start_bare(f"bare-{subscriber}", bare_celery.event_queue(subscriber))
                self._start_bare("bare-commands", bare_celery.COMMANDS_QUEUE)
            if self.by_hand:
                prefix = bare_celery.BY_HAND_WORKER_PREFIX
                for subscriber in SUBSCRIBERS:
                    self._start_bare(f"{prefix}{subscriber}", bare_celery.by_hand_event_queue(subscriber), by_hand=True)
                self._start_bare(f"{prefix}commands", bare_celery.BY_HAND_COMMANDS_QUEUE, by_hand=True)
            self.group.wait_ready()
        except BaseException:
            self.group.stop()
            raise
        return self

    def _start_bare(self, name: str, queue: str, *, by_hand: bool = False) -> None:
        self.group.start(name, [
            sys.executable, "-m", "celery", "-A", "bench.bare_celery:by_hand" if by_hand else "bench.bare_celery",
            "worker", f"--queues={queue}", f"--concurrency={self.concurrency}", "--pool=prefork",
            f"--hostname={name}@%h", "--without-gossip", "--without-mingle", "--loglevel=INFO",
        ], ready_line=" ready.")

    def __exit__(self, *exc) -> None:
        self.group.stop()

    def _cpu(self) -> dict[str, float]:
        return cpu_seconds(self.group.pids(), self.run.services)

    def platform_events(self, count: int, *, profile: str = "", side: str = "platform") -> dict:
        """The platform's handled messages per second, ``count`` events to two subscribers, and
        its CPU per handled message; the figures named ``side``."""
        empty_bus_tables()
        events = price_changes(count)
        with transaction.atomic():
            catalog.publish_many(events)
        cpu_before, started = self._cpu(), time.monotonic()
        pids = {k: v for k, v in self.group.pids().items() if not k.startswith("bare")}
        profilers = py_spy(self.run, profile, pids, seconds=count / 100) if profile else []
        finished = wait_for_rows(2 * count, consumer_like=PRICE_SUBSCRIBERS)
        cpu = cpu_ms_per_message(cpu_before, self._cpu(), 2 * count, side)
        for profiler in profilers:
            profiler.wait()
        return {side: 2 * count / (finished - started), **cpu}

    def events(self, count: int, *, profile: str = "") -> dict:
        """Handled messages per second, ``count`` events to two subscribers, beside the baselines."""
        def platform() -> dict:
            return self.platform_events(count, profile=profile)

        def baseline() -> dict:
            empty_bus_tables()
            ids = [str(uuid.uuid4()) for _ in range(count)]
            cpu_before, started = self._cpu(), time.monotonic()
            bare_celery.send_events(ids)
            finished = wait_for_rows(2 * count, consumer_like="bare-")
            cpu = cpu_ms_per_message(cpu_before, self._cpu(), 2 * count, "baseline")
            return {"baseline": 2 * count / (finished - started), **cpu}

        def by_hand() -> dict:
            empty_bus_tables()
            ids = [str(uuid.uuid4()) for _ in range(count)]
            cpu_before, started = self._cpu(), time.monotonic()
            bare_celery.send_events_by_hand(ids)
            finished = wait_for_rows(2 * count, consumer_like=bare_celery.BY_HAND_WORKER_PREFIX)
            cpu = cpu_ms_per_message(cpu_before, self._cpu(), 2 * count, "by_hand")
            return {"by_hand": 2 * count / (finished - started), **cpu}

        if not self.by_hand:
            return interleaved(self.run, platform, baseline)
        return rotated(self.run, baseline, platform, by_hand)

    def commands(self, count: int) -> dict:
        """Handled commands per second, ``count`` commands to one context."""
        def platform() -> dict:
            empty_bus_tables()
            commands = [ReleaseStock(order_id=uuid.uuid4()) for _ in range(count)]
            with transaction.atomic():
                operator.send_many(commands)
            started = time.monotonic()
            finished = wait_for_rows(count, consumer_like="catalog:catalog.")
            return {"platform": count / (finished - started)}

        def baseline() -> dict:
            empty_bus_tables()
            ids = [str(uuid.uuid4()) for _ in range(count)]
            started = time.monotonic()
            bare_celery.send_commands(ids)
            finished = wait_for_rows(count, consumer_like="bare-commands")
            return {"baseline": count / (finished - started)}

        def by_hand() -> dict:
            empty_bus_tables()
            ids = [str(uuid.uuid4()) for _ in range(count)]
            started = time.monotonic()
            bare_celery.send_commands_by_hand(ids)
            finished = wait_for_rows(count, consumer_like=f"{bare_celery.BY_HAND_WORKER_PREFIX}commands")
            return {"by_hand": count / (finished - started)}

        if not self.by_hand:
            return interleaved(self.run, platform, baseline)
        return rotated(self.run, baseline, platform, by_hand)

    def latency(self, seconds: float, rate: float) -> dict:
        """Milliseconds from the publishing commit to each subscriber's inbox row, at a light steady rate."""
        count = max(5, int(seconds * rate))

        def paced(send_one: Callable[[int], tuple[str, float]]) -> dict[str, float]:
            sent_at, started = {}, time.monotonic()
            for i in range(count):
                time.sleep(max(0.0, started + i / rate - time.monotonic()))
                message_id, at = send_one(i)
                sent_at[message_id] = at
            return sent_at

        def platform() -> dict:
            empty_bus_tables()
            events = price_changes(count, prefix="LATENCY")

            def send_one(i: int) -> tuple[str, float]:
                with transaction.atomic():
                    envelope = catalog.publish(events[i])
                return str(envelope.id), time.time()  # after the commit

            sent_at = paced(send_one)
            wait_for_rows(2 * count, consumer_like=PRICE_SUBSCRIBERS)
            latencies = [ms_since(row.handled_at, sent_at[str(row.message_id)])
                         for row in InboxMessage.objects.filter(consumer__contains=PRICE_SUBSCRIBERS)]
            return percentiles(latencies, "platform")

        def baseline() -> dict:
            empty_bus_tables()

            def send_one(i: int) -> tuple[str, float]:
                message_id = str(uuid.uuid4())
                at = time.time()
                bare_celery.send_events([message_id])
                return message_id, at

            sent_at = paced(send_one)
            wait_for_rows(2 * count, consumer_like="bare-")
            latencies = [ms_since(row.handled_at, sent_at[str(row.message_id)])
                         for row in InboxMessage.objects.filter(consumer__startswith="bare-")]
            return percentiles(latencies, "baseline")

        return interleaved(self.run, platform, baseline)


def end_to_end(run: Run) -> dict:
    """Events, commands and latency at the default concurrency; events at every level for the scale figure."""
    sizes, figures = run.sizes, {}
    for concurrency in sizes.concurrency_levels:
        # "The same guarantees by hand" beside the headline figures, not at every level of the scale.
        with EndToEnd(run, concurrency, by_hand=concurrency == DEFAULT_CONCURRENCY) as e2e:
            if run.profiles is not None:
                e2e.events(sizes.events, profile=f"events-c{concurrency}")  # profiled apart: sampling slows it
            for key, value in e2e.events(sizes.events).items():
                figures[f"scale.c{concurrency}.{key}"] = value
            if concurrency == DEFAULT_CONCURRENCY:
                figures.update({f"events.{k}": v for k, v in e2e.events(sizes.events).items()})
                figures.update({f"commands.{k}": v for k, v in e2e.commands(sizes.commands).items()})
                figures.update({f"latency.{k}": v for k, v in e2e.latency(sizes.latency_seconds,
                                                                          sizes.latency_rate).items()})
    if sizes.lean:
        # What Flower's task events and the task results cost: the same run without them.
        with EndToEnd(run, DEFAULT_CONCURRENCY, settings=LEAN_SETTINGS, by_hand=False) as e2e:
            figures.update({f"lean.{k}": v for k, v in e2e.events(sizes.events).items()})
    return figures


def observability(run: Run) -> dict:
    """Events end to end with traces and metrics off, then on: what seeing inside costs.

    The platform against itself: each configuration its own processes, started
    in an order that rotates with the repeat; ratios are taken within a repeat.
    Spans go to an OTLP/HTTP receiver in this process that counts them and
    decodes nothing (a collector elsewhere, in production).
    """
    from tests.integration.otlp_receiver import OTLPReceiver

    figures = {"off_hooks_us": _off_hooks_us()}
    with OTLPReceiver(keep=False) as receiver:
        configurations = {
            "off": {},
            "traces": {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
            "metrics": {"BUS_METRICS_DIR": str(run.logs / f"metrics-{run.repeat}")},
        }
        names = list(configurations)
        start = run.repeat % len(names)
        for name in names[start:] + names[:start]:
            with EndToEnd(run, DEFAULT_CONCURRENCY, settings=configurations[name], baselines=False) as e2e:
                e2e.platform_events(max(run.sizes.events // 10, 10), side="warm-up")  # the first messages pay imports
                before = receiver.requests
                figures.update(e2e.platform_events(run.sizes.events, side=name))
                # Spans leave every OTEL_BSP_SCHEDULE_DELAY (5 s): some must have come by then.
                deadline = time.monotonic() + 10
                while name == "traces" and receiver.requests == before and time.monotonic() < deadline:
                    time.sleep(0.2)
                if name == "traces" and receiver.requests == before:
                    raise RuntimeError("tracing was on, but no span reached the receiver")
    return figures


def _off_hooks_us(calls: int = 20_000) -> float:
    """Microseconds that one delivery spends in the tracing and metrics hooks while both are off:
    what the consumer side calls per delivery (its process span, a handler's span and timing,
    its outcome's count), in a loop."""
    from messaging import metrics, tracing

    if tracing.enabled() or isinstance(metrics.recorder, metrics.Recorder):
        raise RuntimeError("the bench process must neither trace nor record metrics")
    handler = next(h for h in registry.handlers if h.context == "basket")
    envelope = {"id": str(uuid.uuid4()), "type": "catalog.ProductPriceChanged", "kind": "event"}
    started = time.perf_counter()
    for _ in range(calls):
        with tracing.processing(envelope, context="basket", delivery_id="d") as delivery, \
                metrics.recorder.handler_run(handler), tracing.handling(handler.name, handler.function):
            pass
        delivery.handled({"handled": ["basket"]})
        metrics.recorder.delivered("basket", envelope["type"], metrics.HANDLED)
    return (time.perf_counter() - started) * 1e6 / calls


#: The two per-message costs a deployment may turn off (README, "Speed").
LEAN_SETTINGS = {"CELERY_WORKER_SEND_TASK_EVENTS": "false", "CELERY_TASK_IGNORE_RESULT": "true"}


def embedded(run: Run) -> dict:
    """The embedded default (filesystem broker, SQLite): its own processes, in a folder of its own."""
    data_dir = run.logs / f"embedded-{run.repeat}"
    env = {key: value for key, value in run.env.items() if key not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["BUS_DATA_DIR"] = str(data_dir)
    result = subprocess.run(
        [sys.executable, "-m", "bench.embedded", "--events", str(run.sizes.embedded_events),
         "--steady-seconds", str(run.sizes.embedded_steady_seconds), "--logs", str(data_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the embedded scenario failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


#: Every scenario, in the order they run.
SCENARIOS: dict[str, Callable[[Run], dict]] = {
    "relay": relay,
    "outbox": outbox_writes,
    "duplicates": duplicates,
    "end_to_end": end_to_end,
    "observability": observability,
    "embedded": embedded,
}


def process_environment() -> dict[str, str]:
    """What every process the bench starts gets: the bench's database and broker, no DEBUG."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DJANGO_DEBUG": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]),
    }


def now() -> str:
    return timezone.now().isoformat(timespec="seconds")
