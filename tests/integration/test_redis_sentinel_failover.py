"""Redis with Sentinel (``messaging.brokers.sentinel``): the primary SIGKILLed,
the replica promoted.

Redis replicates asynchronously, so the primary's last answered writes may
never reach the replica. A batch counts as published only once the replica has
it (``WAIT``): one it has not is refused, where the primary's answer alone
would have been lost with the primary. Under a steady flow of events, the
primary killed loses no event and applies none twice; what it does lose (takes,
acks) comes back and the inbox absorbs it. The flow stalls for the failover and
the processes' reconnection: the test prints how long, with what was lost and
absorbed, beside what the docs promise (docs/how-to/choose-a-broker.md).
"""

import collections
import datetime
import os
import re
import signal
import threading
import time
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone
from kombu import Exchange, Queue

from apps.catalog.models import Product
from apps.catalog.services import product_change_price, product_create
from apps.ordering.models import PriceListEntry
from messaging import brokers
from messaging.brokers.base import Outgoing
from messaging.brokers.sentinel import ReplicationTimeoutError
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.registry import registry
from tests.integration import redis
from tests.integration.redis import MASTER_NAME, SentinelGroup

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENT = "catalog.ProductPriceChanged"
#: Price changes per second, and seconds of them before and after the primary is killed.
RATE, BEFORE, AFTER = 10, 5, 10


def _envelope() -> dict:
    message_id = str(uuid.uuid4())
    return {"id": message_id, "type": EVENT, "kind": "event", "version": 1, "source": "catalog",
            "time": "2026-01-01T00:00:00Z", "correlationid": message_id, "data": {}}


def test_a_batch_the_replica_has_not_got_is_not_confirmed_where_the_primarys_answer_alone_is_lost(sentinel_group):
    group = sentinel_group
    broker = brokers.for_url(group.url)
    exchange = Exchange(f"events.{EVENT}", type="direct", durable=True)
    queue = Queue(f"basket.events.{EVENT}", exchange=exchange, routing_key=EVENT, durable=True)

    def publish(connection, envelope):
        return broker.publisher(connection.channel(), timeout=2).publish(
            [Outgoing(envelope, exchange=exchange, routing_key=EVENT)])

    # The socket timeout halved is WAIT's: a second here.
    with broker.connection(socket_timeout=2) as waits, broker.connection(socket_timeout=2,
                                                                          replicas_to_confirm=0) as trusts:
        queue(waits.default_channel).declare()
        before = publish(waits, replicated := _envelope())
        # Given the replica stopped and cut off from the primary: it gets nothing of what follows.
        os.kill(group.replica.process.pid, signal.SIGSTOP)
        try:
            group.primary.client().client_kill_filter(_type="replica")
            on_the_answer = publish(trusts, answered := _envelope())
            on_the_replica = publish(waits, _envelope())
            group.primary.kill()
        finally:
            os.kill(group.replica.process.pid, signal.SIGCONT)
    group.wait_until(lambda: group.primary_port() == group.replica.port, 30, "the replica's promotion")

    assert before.confirmed == [0] and on_the_answer.confirmed == [0]
    assert on_the_replica.confirmed == [] and isinstance(on_the_replica.error, ReplicationTimeoutError)
    # The promoted replica has what it confirmed, and not what the primary alone answered:
    # a relay trusting that answer would have marked a row published that no one ever gets.
    with broker.connection() as connection:
        taken = [queue(connection.channel()).get(no_ack=True) for _ in range(2)]
    assert [message.headers["id"] for message in taken if message] == [replicated["id"]] != [answered["id"]]


def test_a_primary_killed_under_a_steady_flow_loses_nothing_and_applies_nothing_twice(
        sentinel_group, start_platform, transactional_db, capsys):
    group = sentinel_group
    processes = start_platform(["worker-basket", "worker-ordering", "relay"], CELERY_BROKER_URL=group.url,
                               BUS_REDIS_SENTINEL_MASTER=MASTER_NAME, **redis.PLATFORM_ENV)
    processes.wait_until_ready(["worker-basket", "worker-ordering"])
    skus = [f"SENTINEL-{n}" for n in range(10)]
    for sku in skus:
        product_create(sku=sku, name=sku, price=Decimal("10.00"))
    consumers = sorted(handler.name for handler in registry.handlers if handler.message_type == EVENT)
    promoted = _Promotion(group)

    # When: a steady flow of price changes, and the primary SIGKILLed in the middle of it.
    started = time.monotonic()
    for tick in range(RATE * (BEFORE + AFTER)):
        if tick == RATE * BEFORE:
            group.primary.kill()
            promoted.start()
        if promoted.seconds is not None and promoted.restarted is None:
            # As its supervisor would: the sentinels make it a replica of the new primary.
            group.primary.start()
            promoted.restarted = time.monotonic() - promoted.killed
        product_change_price(sku=skus[tick % len(skus)], new_price=Decimal(10 + tick) / 100)
        time.sleep(max(0.0, started + (tick + 1) / RATE - time.monotonic()))
    load_ended = timezone.now()

    # Then: every event reaches both subscribers once (a dead consumer's messages come back
    # after the visibility timeout), nothing is dead-lettered, and the price lists agree.
    rows = OutboxMessage.objects.filter(message_type=EVENT)
    expected = {(str(message_id), consumer) for message_id in rows.values_list("message_id", flat=True)
                for consumer in consumers}
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and not (expected <= _applied(rows)
                                               and not rows.filter(published_at__isnull=True).exists()):
        time.sleep(0.5)
    applied = _applied(rows)
    report = _Report(group, processes, rows, consumers, promoted, lost=expected - applied, load_ended=load_ended)
    with capsys.disabled():
        print(report.text(), flush=True)

    assert rows.filter(published_at__isnull=True).count() == 0
    assert report.lost == set()
    assert applied == expected
    assert DeadLetter.objects.count() == 0
    assert all((entry.price, entry.price_version) == Product.objects.values_list("price", "price_version").get(
        sku=entry.sku) for entry in PriceListEntry.objects.filter(sku__in=skus))
    assert report.stall < 30, report.text()


def _applied(rows) -> set[tuple[str, str]]:
    return {(str(message_id), consumer) for message_id, consumer in InboxMessage.objects.filter(
        message_id__in=rows.values("message_id")).values_list("message_id", "consumer")}


class _Promotion(threading.Thread):
    """Seconds from the primary's kill until the sentinels name the replica primary."""

    def __init__(self, group: SentinelGroup) -> None:
        super().__init__(daemon=True)
        self.group, self.seconds = group, None
        #: When the primary was killed (time.monotonic()), and seconds after that it was started again.
        self.killed = self.restarted = self.replica_back = None

    def run(self) -> None:
        self.killed = time.monotonic()
        self.group.wait_until(lambda: self.group.primary_port() == self.group.replica.port, 60, "the promotion")
        self.seconds = time.monotonic() - self.killed
        # Online: synced, so it acknowledges what it gets (WAIT counts it).
        self.group.wait_until(lambda: self.group.replica.client().info("replication")["slave0"]["state"] == "online",
                              60, "the old primary to be the new one's replica")
        self.replica_back = time.monotonic() - self.killed


def _seconds(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s after the kill"


class _Report:
    """What the failover cost, measured from the rows and the processes' logs."""

    def __init__(self, group, processes, rows, consumers, promoted, *, lost, load_ended) -> None:
        self.lost = lost
        promoted.join(timeout=60)
        handled = collections.defaultdict(list)
        created = dict(rows.values_list("message_id", "created_at"))
        latencies = []
        for message_id, consumer, at in InboxMessage.objects.filter(message_id__in=created).values_list(
                "message_id", "consumer", "handled_at"):
            handled[consumer].append(at)
            latencies.append((at - created[message_id]).total_seconds())
        #: The longest a subscriber went without handling an event while they kept coming (a message
        #: a dead consumer held, handed out again after the visibility timeout, is the slowest one).
        self.stall = max((b - a for times in map(sorted, handled.values())
                          for a, b in zip(times, times[1:], strict=False) if a < load_ended),
                         default=datetime.timedelta()).total_seconds()
        confirm_waits = [(published - written).total_seconds()
                         for written, published in rows.values_list("created_at", "published_at") if published]
        logs = "".join(path.read_text(errors="replace") for path in processes.logs.glob("*.log"))
        # A worker's result names the handlers that found the message in their inbox already.
        absorbed = sum(len(re.findall(r"'[^']+'", found)) for found in re.findall(r"'duplicates': \[([^\]]*)\]", logs))
        self.figures = {
            "events published (outbox rows)": rows.count(),
            "deliveries due (event × subscriber)": rows.count() * len(consumers),
            "lost (due, not applied)": len(lost),
            "applied twice": "0 (one inbox row per event and subscriber, by its unique key)",
            "redeliveries absorbed by the inbox": absorbed,
            "dead letters": DeadLetter.objects.count(),
            "sentinels promoted the replica": _seconds(promoted.seconds),
            "old primary started again": _seconds(promoted.restarted),
            "old primary a replica of the new one": _seconds(promoted.replica_back),
            "longest a row waited to be confirmed": f"{max(confirm_waits, default=0):.1f} s",
            "longest stall of a subscriber": f"{self.stall:.1f} s (events came every {1 / RATE:.1f} s)",
            "slowest event, written to handled": f"{max(latencies, default=0):.1f} s",
            "sentinel settings": f"down-after-milliseconds {group.down_after}, failover-timeout "
                                 f"{group.failover_timeout}; BUS_REDIS_VISIBILITY_TIMEOUT "
                                 f"{redis.PLATFORM_ENV['BUS_REDIS_VISIBILITY_TIMEOUT']} s",
        }

    def text(self) -> str:
        width = max(map(len, self.figures))
        return "\n".join([
            "", f"Redis Sentinel failover: primary SIGKILLed after {BEFORE} s of {RATE} price changes/s, "
                f"{AFTER} s more of them",
            *(f"  {name:<{width}}  {value}" for name, value in self.figures.items()),
            "  promised (docs/how-to/choose-a-broker.md): nothing published lost (WAIT for a replica), "
            "each event applied once per subscriber, a stall of about the failover plus reconnecting",
        ])
