"""Flower tells the truth, read through its HTTP API on real workers and RabbitMQ:
every dead letter made while it runs is one failed task there, with its reason, and
each subscriber's run of an event is a task of its own."""

import base64
import contextlib
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from celery import current_app
from django.db import transaction
from kombu import Queue

from apps.catalog.messages import ProductPriceChanged, StockReserved
from apps.ordering.models import PriceListEntry
from apps.catalog.services import product_change_price, product_create
from messaging import brokers
from messaging.brokers.base import Outgoing, publish_envelope
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.outbox import nudge_relay
from tests.senders import publish, publish_many
from messaging.task_message import delivery_id
from messaging.topology import DEFAULT_EXCHANGE
from tests.integration.on_the_broker import returned_until_the_broker_gives_up
from tests.integration.redis import MASTER_NAME
from tests.polling import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOGIN = "watcher:correct-horse"
BASKET_PRICES = "basket.events.catalog.ProductPriceChanged"
CONTEXTS = ("catalog", "basket", "ordering", "payment")


class FlowerAPI:
    """Flower's HTTP API, behind its login."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **query):
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url)
        request.add_header("Authorization", "Basic " + base64.b64encode(LOGIN.encode()).decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/healthcheck", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def failed_tasks(self) -> dict:
        return self.get("/api/tasks", state="FAILURE")

    def task(self, task_id: str) -> dict | None:
        try:
            return self.get(f"/api/task/info/{task_id}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None  # not heard of yet
            raise


@contextlib.contextmanager
def _flower(env: dict, log_path: Path):
    """Flower as run_platform starts it (its config file, a login), answering on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**env, "FLOWER_BASIC_AUTH": LOGIN, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "flower", "--conf=platform/config/flowerconfig.py",
             f"--port={port}", "--address=127.0.0.1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    api = FlowerAPI(port)
    try:
        wait_for(lambda: api.answers() or process.poll() is not None, message="Flower to answer")
        assert process.poll() is None, log_path.read_text()[-3000:]
        yield api
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def flower(bus, tmp_path):
    """Flower on the test vhost, hearing every running worker."""
    with _flower(bus.env, tmp_path / "flower.log") as api:
        # A heartbeat from every worker: Flower's event receiver is consuming.
        workers = [f"{context}.{bus[f'worker-{context}'].pid}@" for context in CONTEXTS]
        wait_for(lambda: all(any(w["hostname"].startswith(name) for w in api.get("/workers", json=1)["data"])
                             for name in workers),
                 timeout=60, message="Flower to hear from every worker")
        yield api


def _envelope(**changes) -> dict:
    message_id = str(uuid.uuid4())
    return {
        "id": message_id, "type": "catalog.ProductPriceChanged", "kind": "event", "version": 2, "source": "catalog",
        "time": "2026-01-01T00:00:00Z", "correlationid": message_id, "specversion": "1.0",
        "datacontenttype": "application/json",
        "data": {"sku": "X", "old_price": "1.00", "new_price": "2.00", "price_version": 1, "currency": "EUR"},
        **changes,
    }


def _to_basket(envelope: dict) -> None:
    with current_app.producer_or_acquire() as producer:
        publish_envelope(producer, envelope, exchange=DEFAULT_EXCHANGE, routing_key=BASKET_PRICES)


def _pickled_to_basket() -> str:
    message_id = str(uuid.uuid4())
    with current_app.producer_or_acquire() as producer:
        producer.publish(
            pickle.dumps(((), {"envelope": _envelope()}, {})), content_type="application/x-python-serialize",
            content_encoding="binary", exchange=DEFAULT_EXCHANGE, routing_key=BASKET_PRICES,
            headers={"id": message_id, "task": "catalog.ProductPriceChanged", "lang": "py"},
        )
    return message_id


def test_every_dead_letter_made_while_flower_runs_is_one_failed_task_with_its_reason(flower):
    # One dead letter of each kind the platform makes. In the task: a handler that fails
    # past its retries (ordering has no such order), data that breaks the contract, a
    # version newer than this worker's that no worker took in BUS_NEWER_VERSION_HOLD (its time
    # is long past). At the worker's intake: an unknown message type,
    # a pickled body. By RabbitMQ: a message over its delivery limit, collected by the relay.
    with transaction.atomic():
        failing = publish(StockReserved(order_id=uuid.uuid4()))
    expected = {
        (str(failing.id), "ordering"): DeadLetter.Reason.HANDLER_FAILED,
        (_sent(_envelope(data={"sku": "X"})), "basket"): DeadLetter.Reason.INVALID_DATA,
        (_sent(_envelope(version=3)), "basket"): DeadLetter.Reason.NEWER_VERSION,
        (_sent(_envelope(type="catalog.ProductVanished")), "basket"): DeadLetter.Reason.UNREADABLE,
        (_pickled_to_basket(), "basket"): DeadLetter.Reason.UNREADABLE,
    }
    over_the_limit = _envelope()
    returned_until_the_broker_gives_up(brokers.current(), over_the_limit, "poisontest")
    expected[(over_the_limit["id"], "poisontest")] = DeadLetter.Reason.BROKER

    # The relay collects dead letters after each round of publishing: a nudge starts one.
    wait_for(lambda: nudge_relay() or DeadLetter.objects.count() == len(expected), interval=0.5,
             message="every dead letter")
    letters = {delivery_id(row.message_id, row.context): row for row in DeadLetter.objects.all()}
    assert {(str(row.message_id), row.context): row.reason for row in letters.values()} == expected

    failed = wait_for(lambda: (tasks := flower.failed_tasks()) and len(tasks) >= len(letters) and tasks,
                      message="Flower to show every failure")
    # One failed task per dead letter, under its delivery's id, and nothing else failed.
    assert sorted(failed) == sorted(letters)
    for task_id, task in failed.items():
        row = letters[task_id]
        assert task["exception"].startswith("DeadLettered(")
        assert f"{row.reason} (dead letter {row.id})" in task["exception"]
        assert task["name"] == (row.message_type or "(unreadable)")
    assert failed[delivery_id(failing.id, "ordering")]["worker"].startswith("ordering.")
    assert failed[delivery_id(over_the_limit["id"], "poisontest")]["worker"].startswith("relay.")


def _sent(envelope: dict) -> str:
    _to_basket(envelope)
    return envelope["id"]


def test_an_event_two_contexts_handle_is_two_tasks_each_with_its_worker(flower):
    sku = f"TWO-{uuid.uuid4().hex[:8]}"
    product_create(sku=sku, name="Lamp", price=Decimal("20.00"), stock=1)
    product_change_price(sku=sku, new_price=Decimal("25.00"))
    message_id = OutboxMessage.objects.get(message_type="catalog.ProductPriceChanged",
                                           envelope__data__sku=sku).message_id

    tasks = {context: wait_for(lambda c=context: (t := flower.task(delivery_id(message_id, c)))
                               and t["state"] == "SUCCESS" and t, message=f"{context}'s task in Flower")
             for context in ("basket", "ordering")}

    assert tasks["basket"]["uuid"] != tasks["ordering"]["uuid"]
    assert tasks["basket"]["worker"].startswith("basket.") and tasks["ordering"]["worker"].startswith("ordering.")
    # The message id stays visible in each task's arguments.
    assert all(str(message_id) in task["kwargs"] for task in tasks.values())


def test_each_delivery_of_a_batch_is_its_own_task_and_a_failure_fails_only_its_own(flower, bus):
    # The ordering worker is frozen while a burst waits for it: price changes, and orders'
    # StockReserved it cannot find (its handler fails every attempt) among them. Thawed, it
    # takes what waits in batches (messaging.batch_dispatch), one transaction each.
    prices = [ProductPriceChanged(sku=f"BATCH-{uuid.uuid4().hex[:8]}", old_price=Decimal("1.00"),
                                  new_price=Decimal("2.00"), price_version=1, currency="EUR") for _ in range(40)]
    log_path = bus["worker-ordering"].log_path
    earlier = log_path.stat().st_size  # the worker runs for the session: its log holds earlier tests'
    with bus.frozen("worker-ordering"):
        failing = []
        for chunk in range(4):
            with transaction.atomic():
                published = publish_many(prices[chunk * 10:(chunk + 1) * 10])
                failing.append(publish(StockReserved(order_id=uuid.uuid4())))
        wait_for(lambda: not OutboxMessage.objects.due().exists(), message="the burst to be published")
    price_ids = list(OutboxMessage.objects.filter(message_type="catalog.ProductPriceChanged", envelope__data__sku__in=[
        p.sku for p in prices]).values_list("message_id", flat=True))
    assert published and len(price_ids) == len(prices)

    # Each delivery is its own task in Flower, a SUCCESS with its own runtime, by the ordering worker.
    for message_id in price_ids:
        task = wait_for(lambda m=message_id: (t := flower.task(delivery_id(m, "ordering"))) and t["state"] == "SUCCESS"
                        and t, message="each price change's task to succeed in Flower")
        assert task["runtime"] > 0 and task["worker"].startswith("ordering.")
    # Each failing delivery fails alone, as a dead letter; nothing else of its batches does.
    for envelope in failing:
        task = wait_for(lambda m=envelope.id: (t := flower.task(delivery_id(m, "ordering"))) and t["state"] == "FAILURE"
                        and t, message="each failing delivery's task to fail in Flower")
        assert task["exception"].startswith("DeadLettered(")
    assert sorted(DeadLetter.objects.filter(context="ordering").values_list("message_id", flat=True)) == sorted(
        envelope.id for envelope in failing)
    assert InboxMessage.objects.filter(message_id__in=price_ids, consumer="ordering:catalog.ProductPriceChanged").count() == len(prices)
    assert PriceListEntry.objects.filter(sku__in=[p.sku for p in prices], price=Decimal("2.00")).count() == len(prices)

    with open(log_path) as log_file:
        log_file.seek(earlier)
        log = log_file.read()
    batches = [int(size) for size in re.findall(r"handled (\d+) deliveries in one transaction", log)]
    assert batches and max(batches) > 1, "the worker took no batch"
    assert "failed in a batch and runs again alone" in log, "no failing delivery shared a batch"


def test_on_redis_flowers_queue_lengths_count_the_bus_streams(redis_server, tmp_path):
    # Flower took the broker's address from the connection's URI, which names the bus's
    # transport class ("'redis' broker is not supported"), and counted with LLEN, which
    # the bus's streams refuse.
    _assert_flower_counts_the_streams(redis_server.url, os.environ, tmp_path)


def test_through_sentinel_flowers_queue_lengths_count_the_bus_streams(sentinel_group, tmp_path):
    # Flower read a URL of several sentinels as one address, its database "0;sentinel://...".
    _assert_flower_counts_the_streams(sentinel_group.url, {**os.environ, "BUS_REDIS_SENTINEL_MASTER": MASTER_NAME},
                                      tmp_path)


def _assert_flower_counts_the_streams(url: str, env: dict, tmp_path) -> None:
    broker = brokers.for_url(url)
    with broker.connection() as connection:
        channel = connection.default_channel
        for name in ("ordering.commands", BASKET_PRICES):
            channel.client.delete(name)  # the session's Redis: what earlier tests left there goes
            Queue(name, exchange="", routing_key=name, durable=True)(channel).declare()
        publisher = broker.publisher(channel, timeout=5)
        publisher.publish([Outgoing(_envelope(), exchange=DEFAULT_EXCHANGE, routing_key="ordering.commands")
                           for _ in range(2)])

        with _flower({**env, "CELERY_BROKER_URL": url}, tmp_path / "flower.log") as api:
            lengths = {q["name"]: q["messages"] for q in api.get("/api/queues/length")["active_queues"]}

    assert lengths["ordering.commands"] == 2
    assert lengths[BASKET_PRICES] == 0
