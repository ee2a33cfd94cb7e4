"""What every broker must do for the bus, written once and run on each broker.

``BrokerContract`` is not collected itself (its name does not start with
``Test``): each broker's test module subclasses it and says only which broker,
a class fixture ``broker_url`` and the environment its processes need
(``platform_env``), as pyeventsourcing's adapters subclass its persistence
test case. The class starts the platform's processes once (a worker per
context and the relay) on that broker, and drives and reads them only through
what every broker offers alike: the database (outbox, inbox, dead letters, task
results, the contexts' tables), ``PlatformBus``, and messages put on the broker
through its adapter's connection (``broker.connection()``). The reference flows
(``tests.flows.FlowContract``) are part of it.

Where a broker cannot keep a promise (its adapter's flags say which: no
delivery limit, a killed worker's message lost), its subclass marks that test
with the reason. Tests of what one broker does its own way (RabbitMQ's queue
arguments and retry queues, Redis's keys) stay in that broker's modules.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pickle
import signal
import threading
import uuid
from decimal import Decimal

import pytest
from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django_celery_results.models import TaskResult

from apps.basket.models import BasketLine
from apps.basket.services import basket_add_item
from apps.catalog.messages import ReserveStock, ReserveStockLine, StockReserved
from apps.catalog.models import Product, StockReservation
from apps.catalog.services import product_change_price, product_create
from apps.ordering.models import Order, PriceListEntry
from messaging import brokers, repair
from messaging.brokers.base import DEAD_LETTER_QUEUE
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.outbox import nudge_relay
from messaging.task_message import delivery_id
from messaging.topology import Topology, event_queue_name
from tests.flows import FlowContract
from tests.integration import on_the_broker
from tests.integration.platform_bus import PlatformBus
from tests.polling import wait_for
from tests.senders import publish, send

PRICE_CHANGED = "catalog.ProductPriceChanged"
BASKET_PRICES = event_queue_name("basket", PRICE_CHANGED)


def _price_changed(message_type: str = PRICE_CHANGED) -> dict:
    """A ProductPriceChanged envelope as the catalog would send it (or another type, same data)."""
    message_id = str(uuid.uuid4())
    return {
        "id": message_id, "type": message_type, "kind": "event", "version": 2, "source": "catalog",
        "time": "2026-01-01T00:00:00Z", "correlationid": message_id,
        "specversion": "1.0", "datacontenttype": "application/json",
        "data": {"sku": "X", "old_price": "1.00", "new_price": "2.00", "price_version": 1, "currency": "EUR"},
    }


def _dead_letter(message_id) -> DeadLetter | None:
    return DeadLetter.objects.filter(message_id=message_id).first()


def _task(message_id, context: str) -> TaskResult | None:
    """``context``'s delivery of the message: its task (``messaging.task_message.delivery_id``)."""
    return TaskResult.objects.filter(task_id=delivery_id(message_id, context)).first()


@contextlib.contextmanager
def _held_in_another_transaction(lock):
    """Run ``lock()`` in a transaction of another thread and hold it until the block ends."""
    holding, release = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                lock()
                holding.set()
                release.wait(timeout=60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        holding.wait(timeout=10)
        yield
    finally:
        release.set()
        holder.join(timeout=30)


def _product_row_locked(sku: str):
    """The catalog handler for ``sku`` will wait on this, mid-transaction."""
    return _held_in_another_transaction(lambda: Product.objects.select_for_update().get(sku=sku))


def _blocked_backends() -> int:
    """Database sessions waiting for a lock: a worker stuck where the test wants it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


@contextlib.contextmanager
def _price_list_refusing_writes():
    """Every write to ordering's price list fails until the block ends (a CHECK no row
    passes, not checked against the rows there already): ordering's handler of a price
    change raises, basket's does not."""
    table = PriceListEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT contract_refuses_writes CHECK (false) NOT VALID")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS contract_refuses_writes")


def _reserve(sku: str, quantity: int):
    """Ask the catalog to reserve stock for an order awaiting it (whose flow then runs to
    its end: an order ordering does not have would fail its StockReserved for seconds)."""
    order = Order.objects.create(id=uuid.uuid4(), customer_id=f"c-{sku}", total=Decimal("1.00"))
    with transaction.atomic():
        return send(ReserveStock(order_id=order.id, lines=[ReserveStockLine(sku=sku, quantity=quantity)]))


class OnOneBroker:
    """The platform's processes on one broker for a whole test class, and the fixtures its tests
    drive them with; a subclass gives ``broker_url`` (and ``platform_env``)."""

    @pytest.fixture(scope="class")
    def broker_url(self) -> str:
        raise NotImplementedError("a subclass says which broker")

    @pytest.fixture(scope="class")
    def platform_env(self) -> dict[str, str]:
        """Settings the processes need on this broker, as environment variables."""
        return {}

    @pytest.fixture(scope="class")
    def platform(self, platforms, broker_url, platform_env):
        """A worker per context and the relay on the broker, for the whole class."""
        yield platforms.on(broker_url, **platform_env)
        if broker_url != settings.CELERY_BROKER_URL:
            platforms.stop()  # the session's RabbitMQ ones run on for the tests after

    @pytest.fixture
    def broker(self, platform, settings):
        """The adapter of the broker under test. The test's own sends (a repair's retry)
        go to it too: ``messaging.brokers.current()`` is its adapter meanwhile."""
        # The test process's Celery app takes its transport from the settings when it is
        # first configured (config.celery_app): configure it for the session's broker first.
        assert current_app.conf.broker_transport == brokers.for_url(settings.CELERY_BROKER_URL).transport, (
            "the Celery app was configured while CELERY_BROKER_URL named another broker")
        settings.CELERY_BROKER_URL = platform.env["CELERY_BROKER_URL"]
        return platform.broker

    @pytest.fixture
    def bus(self, platform, broker, transactional_db):
        """The running platform; each test's data is committed so the processes see it."""
        bus = PlatformBus(platform)
        yield bus
        # Tables are emptied after each test: let the workers finish first, or
        # the TRUNCATE deadlocks with a handler still writing.
        bus.run_until_quiet()


class BrokerContract(OnOneBroker, FlowContract):
    """The bus's promises on one broker; a subclass gives ``broker_url`` (and ``platform_env``)."""

    # Fan-out

    def test_each_subscriber_of_an_event_runs_a_task_of_its_own(self, bus):
        sku = f"TWO-{uuid.uuid4().hex[:8]}"
        product_create(sku=sku, name="Lamp", price=Decimal("20.00"), stock=1)
        product_change_price(sku=sku, new_price=Decimal("25.00"))
        message_id = OutboxMessage.objects.get(message_type=PRICE_CHANGED, envelope__data__sku=sku).message_id

        tasks = {context: wait_for(lambda c=context: (r := _task(message_id, c)) and r.status == "SUCCESS" and r,
                                   message=f"{context}'s task")
                 for context in ("basket", "ordering")}

        assert tasks["basket"].task_id != tasks["ordering"].task_id
        assert tasks["basket"].worker.startswith("basket.") and tasks["ordering"].worker.startswith("ordering.")
        # The message id stays visible in each task's arguments.
        assert all(str(message_id) in task.task_kwargs for task in tasks.values())
        assert InboxMessage.objects.filter(message_id=message_id).count() == 2

    def test_an_event_waits_in_the_queue_of_a_subscriber_that_has_not_started_yet(self, bus, platform, broker):
        # A broker where basket has never run: no worker, no queue.
        platform["worker-basket"].terminate()
        assert platform["worker-basket"].wait(timeout=60) == 0
        with broker.connection() as connection:
            [queue] = [q for q in Topology(broker=broker).context_queues("basket") if q.name == BASKET_PRICES]
            queue = queue(connection.default_channel)
            # Declared first: kombu's virtual transports (Redis) unbind only what this
            # connection declared, and a binding left behind would still route to it.
            queue.declare()
            queue.delete()
        # A relay starting now declares the topology, basket's queue included.
        platform.kill("relay")
        platform.start("relay")

        product_create(sku="EARLY-1", name="Vase", price=Decimal("15.00"), stock=2)
        basket_add_item(customer_id="c-early", sku="EARLY-1", quantity=1, unit_price=Decimal("15.00"))
        product_change_price(sku="EARLY-1", new_price=Decimal("17.00"))
        wait_for(lambda: PriceListEntry.objects.filter(sku="EARLY-1").exists(), message="ordering to get the event")

        platform.start("worker-basket")
        platform.wait_until_ready(["worker-basket"])

        wait_for(lambda: BasketLine.objects.filter(sku="EARLY-1", unit_price=Decimal("17.00")).exists(),
                 message="basket to find the event waiting in its queue")

    # Duplicates

    def test_one_message_delivered_twice_is_applied_once(self, bus, broker):
        sku = f"TWICE-{uuid.uuid4().hex[:8]}"
        product_create(sku=sku, name="Jug", price=Decimal("8.00"), stock=5)
        envelope = OutboxMessage.objects.get(message_id=_reserve(sku, 2).id).envelope
        bus.run_until_quiet()

        # The broker hands catalog the same message again (a redelivery, a publisher's second send).
        on_the_broker.publish(broker, envelope, exchange=Topology(broker=broker).commands_exchange(),
                              routing_key="catalog.ReserveStock")
        bus.run_until_quiet()

        assert Product.objects.get(sku=sku).stock_available == 3
        assert StockReservation.objects.filter(order_id=envelope["data"]["order_id"]).count() == 1
        assert InboxMessage.objects.filter(message_id=envelope["id"]).count() == 1
        assert OutboxMessage.objects.filter(message_type="catalog.StockReserved").count() == 1
        assert '"duplicates": ["catalog:catalog.ReserveStock"]' in _task(envelope["id"], "catalog").result

    # Retries

    def test_a_handler_that_keeps_failing_is_retried_then_dead_lettered(self, bus):
        # Ordering cannot move an order it does not have: its handler raises every time.
        with transaction.atomic():
            envelope = publish(StockReserved(order_id=uuid.uuid4()))

        letter = wait_for(lambda: _dead_letter(envelope.id), message="the dead letter")

        assert letter.reason == DeadLetter.Reason.HANDLER_FAILED
        assert (letter.context, letter.consumer) == ("ordering", "ordering:catalog.StockReserved")
        assert letter.attempts == settings.BUS_MAX_RETRIES + 1
        assert "DoesNotExist" in letter.error
        assert letter.body["id"] == str(envelope.id)
        assert not InboxMessage.objects.filter(message_id=envelope.id).exists()

    def test_a_handler_that_fails_first_succeeds_on_a_retry(self, bus):
        # The event arrives before the state it needs (the order) is committed.
        order_id = uuid.uuid4()
        with transaction.atomic():
            envelope = publish(StockReserved(order_id=order_id))
        wait_for(lambda: (task := _task(envelope.id, "ordering")) and task.status == "RETRY",
                 message="a first, failed attempt")

        Order.objects.create(id=order_id, customer_id="late", total="5.00")

        # Moved on by the retried event, the flow then runs to the end.
        wait_for(lambda: Order.objects.filter(id=order_id, status=Order.Status.PAID).exists(),
                 message="the retried event to move the order on")
        assert not _dead_letter(envelope.id)

    def test_a_retry_reaches_only_the_subscriber_whose_handler_failed(self, bus):
        sku = f"RETRY-{uuid.uuid4().hex[:8]}"
        product_create(sku=sku, name="Bowl", price=Decimal("10.00"), stock=1)
        basket_add_item(customer_id=f"c-{sku}", sku=sku, quantity=1, unit_price=Decimal("10.00"))

        with _price_list_refusing_writes():
            product_change_price(sku=sku, new_price=Decimal("12.00"))
            message_id = OutboxMessage.objects.get(message_type=PRICE_CHANGED, envelope__data__sku=sku).message_id
            wait_for(lambda: (task := _task(message_id, "ordering")) and task.status == "RETRY",
                     message="ordering's handler to fail and its delivery to wait for a retry")
            wait_for(lambda: (task := _task(message_id, "basket")) and task.status == "SUCCESS",
                     message="basket to apply the event meanwhile")
        bus.run_until_quiet()  # ordering's retry, now that its price list takes writes again

        assert PriceListEntry.objects.get(sku=sku).price == Decimal("12.00")
        assert BasketLine.objects.get(sku=sku).unit_price == Decimal("12.00")
        assert _task(message_id, "ordering").status == "SUCCESS"
        # Basket ran once: a second delivery would have found its inbox row and said so.
        assert '"duplicates": []' in _task(message_id, "basket").result
        assert InboxMessage.objects.filter(message_id=message_id).count() == 2
        assert not _dead_letter(message_id)

    # The delivery limit

    def test_a_message_over_the_delivery_limit_is_dead_lettered_by_the_broker_and_collected(self, bus, broker):
        envelope = _price_changed()
        handed_out = on_the_broker.returned_until_the_broker_gives_up(broker, envelope, "poisontest")

        assert handed_out == settings.BUS_DELIVERY_LIMIT + 1
        # The relay collects dead letters after each round of publishing: a nudge starts one.
        letter = wait_for(lambda: nudge_relay() or _dead_letter(envelope["id"]), interval=0.5,
                          message="the relay to collect the dead letter")

        assert (letter.reason, letter.context) == (DeadLetter.Reason.BROKER, "poisontest")
        assert f"{broker.label} dead-lettered it from poisontest.commands (delivery_limit)" in letter.error
        assert letter.attempts == settings.BUS_DELIVERY_LIMIT + 1
        assert letter.body == envelope
        wait_for(lambda: on_the_broker.queue_depth(broker, DEAD_LETTER_QUEUE) == 0, timeout=10,
                 message="the relay to ack it")
        # Celery reports no failure for a task whose worker died holding it: the relay does.
        failed = wait_for(lambda: _task(envelope["id"], "poisontest"),
                          message="the relay to store the delivery's failure")
        assert failed.status == "FAILURE"
        assert "DeadLettered" in failed.result and "broker" in failed.result and str(letter.id) in failed.result

    # Unreadable messages

    def test_an_unknown_task_name_is_dead_lettered_and_never_run(self, bus, broker):
        envelope = _price_changed("catalog.ProductVanished")
        on_the_broker.publish(broker, envelope, routing_key=BASKET_PRICES)

        letter = wait_for(lambda: _dead_letter(envelope["id"]), message="the dead letter")

        assert (letter.reason, letter.context) == (DeadLetter.Reason.UNREADABLE, "basket")
        assert "no task named 'catalog.ProductVanished'" in letter.error
        assert letter.body == envelope

    def test_a_pickled_body_is_dead_lettered_and_never_unpickled(self, bus, broker):
        message_id = str(uuid.uuid4())
        payload = pickle.dumps(((), {"envelope": _price_changed()}, {}))
        on_the_broker.put(broker, payload, routing_key=BASKET_PRICES, content_type="application/x-python-serialize",
                          content_encoding="binary", headers={"id": message_id, "task": PRICE_CHANGED, "lang": "py"})

        letter = wait_for(lambda: _dead_letter(message_id), message="the dead letter")

        assert letter.reason == DeadLetter.Reason.UNREADABLE
        assert "Refusing to deserialize untrusted content of type pickle" in letter.error
        assert base64.b64decode(letter.body["base64"]) == payload  # kept as bytes, never unpickled
        assert letter.headers["content_type"] == "application/x-python-serialize"
        assert not InboxMessage.objects.filter(message_id=message_id).exists()

    def test_a_task_message_without_an_id_is_dead_lettered_and_the_worker_lives(self, bus, platform, broker):
        envelope = _price_changed()
        on_the_broker.put(broker, [[], {"envelope": envelope}, {}], routing_key=BASKET_PRICES, serializer="json",
                          headers={"task": PRICE_CHANGED, "lang": "py"})

        # No id header, so the row is found by the envelope's id kept in its body.
        letter = wait_for(lambda: DeadLetter.objects.filter(body__id=envelope["id"]).first(),
                          message="the dead letter")

        assert letter.reason == DeadLetter.Reason.UNREADABLE
        assert letter.error == "task headers the bus does not send: id: Field required"
        assert letter.body == envelope
        assert not InboxMessage.objects.filter(message_id=envelope["id"]).exists()
        assert platform["worker-basket"].poll() is None

    def test_a_task_message_whose_body_is_not_args_kwargs_embed_is_dead_lettered(self, bus, platform, broker):
        message_id = str(uuid.uuid4())
        on_the_broker.put(broker, {"envelope": _price_changed()}, routing_key=BASKET_PRICES, serializer="json",
                          headers={"id": message_id, "task": PRICE_CHANGED, "lang": "py"})

        letter = wait_for(lambda: _dead_letter(message_id), message="the dead letter")

        assert letter.error == "task message body is not [args, kwargs, embed]"
        assert platform["worker-basket"].poll() is None

    def test_an_event_that_says_it_is_a_command_is_dead_lettered_at_once(self, bus, broker):
        # Retried as a command it would have gone to basket.commands, which does not exist.
        envelope = {**_price_changed(), "kind": "command"}
        on_the_broker.publish(broker, envelope, routing_key=BASKET_PRICES)

        letter = wait_for(lambda: _dead_letter(envelope["id"]), message="the dead letter")

        assert (letter.reason, letter.context) == (DeadLetter.Reason.INVALID_ENVELOPE, "basket")
        assert "kind 'command', but catalog.ProductPriceChanged is an event" in letter.error
        assert letter.attempts == 1

    # Workers dying or stopping: mid-handler the transaction rolls back and the message
    # comes back (late ack, reject on worker loss); after the commit but before the ack
    # it comes back and the inbox absorbs it; on SIGTERM the running handler finishes.

    def test_a_handler_killed_before_commit_is_redelivered_and_applied_once(self, bus, platform):
        sku = f"KILL-{uuid.uuid4().hex[:8]}"
        product_create(sku=sku, name="Lamp", price=Decimal("30.00"), stock=5)

        with _product_row_locked(sku):
            envelope = _reserve(sku, 2)
            wait_for(lambda: _blocked_backends() >= 1, message="the handler to block inside its transaction")

            # SIGKILL every pool process of the catalog worker, the busy one among them.
            for pid in platform.children("worker-catalog"):
                os.kill(pid, signal.SIGKILL)
            # The killed handler's session still waits (PostgreSQL notices the dead client
            # only when the lock frees); a second waiting session is the redelivery.
            wait_for(lambda: _blocked_backends() >= 2, message="the redelivered message to reach the handler again")

        wait_for(lambda: InboxMessage.objects.filter(message_id=envelope.id).exists(), message="the effect")
        assert Product.objects.get(sku=sku).stock_available == 3
        assert StockReservation.objects.filter(order_id=envelope.data["order_id"]).count() == 1
        assert not _dead_letter(envelope.id)
        assert platform["worker-catalog"].poll() is None  # the worker replaced its pool processes

    def test_a_worker_killed_after_commit_but_before_ack_redelivers_and_the_inbox_absorbs_it(self, bus, platform):
        sku = f"ACK-{uuid.uuid4().hex[:8]}"
        product_create(sku=sku, name="Chair", price=Decimal("40.00"), stock=5)
        worker = platform["worker-catalog"]

        # The pool process commits, and returns to the worker's main process, which acks:
        # with the main process stopped, the handler's commit happens and the ack never does.
        with _product_row_locked(sku):
            envelope = _reserve(sku, 2)
            wait_for(lambda: _blocked_backends() >= 1, message="the handler to be running")
            os.kill(worker.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: InboxMessage.objects.filter(message_id=envelope.id).exists(),
                     message="the committed effect")
        finally:
            platform.kill("worker-catalog")
        platform.start("worker-catalog")
        platform.wait_until_ready(["worker-catalog"])

        wait_for(lambda: '"duplicates": ["catalog:catalog.ReserveStock"]' in
                 getattr(_task(envelope.id, "catalog"), "result", ""),
                 message="the redelivered message to be recognised as a duplicate")
        assert Product.objects.get(sku=sku).stock_available == 3
        assert InboxMessage.objects.filter(message_id=envelope.id).count() == 1

    def test_sigterm_lets_the_running_handler_finish_and_ack(self, bus, platform):
        # As in a deploy: the worker is asked to stop while a handler is running.
        sku = f"TERM-{uuid.uuid4().hex[:8]}"
        product_create(sku=sku, name="Desk", price=Decimal("90.00"), stock=5)
        worker = platform["worker-catalog"]

        with _product_row_locked(sku):
            envelope = _reserve(sku, 1)
            wait_for(lambda: _blocked_backends() >= 1, message="the handler to be running")
            worker.send_signal(signal.SIGTERM)

        assert worker.wait(timeout=60) == 0  # a warm shutdown: it waited for the handler
        assert InboxMessage.objects.filter(message_id=envelope.id).count() == 1
        assert Product.objects.get(sku=sku).stock_available == 4
        assert _task(envelope.id, "catalog").status == "SUCCESS"
        platform.start("worker-catalog")
        platform.wait_until_ready(["worker-catalog"])

    # Repair

    def test_a_dead_letter_is_one_failed_task_and_a_retry_is_handled_by_the_real_worker(self, bus, broker):
        # Ordering gives up on StockReserved for an order it does not have.
        order_id = uuid.uuid4()
        with transaction.atomic():
            envelope = publish(StockReserved(order_id=order_id))
        letter = wait_for(lambda: _dead_letter(envelope.id), message="the dead letter")

        # Its task failed, with the reason, and the worker acknowledged it: the broker
        # never dead-letters it again, so the relay collects no second row.
        failed = wait_for(lambda: (r := _task(envelope.id, "ordering")) and r.status == "FAILURE" and r,
                          message="the task to be marked FAILURE")
        assert "DeadLettered" in failed.result and "handler_failed" in failed.result and str(letter.id) in failed.result
        assert on_the_broker.queue_depth(broker, DEAD_LETTER_QUEUE) == 0
        assert DeadLetter.objects.filter(message_id=envelope.id).count() == 1
        assert letter.exception_type == "DoesNotExist"

        # Once the order exists, an operator retries the dead letter.
        Order.objects.create(id=order_id, customer_id="repair", total=Decimal("5.00"))
        report = repair.retry([letter], actor="operator-test")
        assert report.done == [letter]

        wait_for(lambda: Order.objects.get(id=order_id).status != Order.Status.AWAITING_STOCK,
                 message="the retried message to move the order on")
        outcome = repair.retry_outcome(letter.actions.get())
        assert outcome.state == "handled"
        # The same delivery's task now succeeded; no new dead letter.
        wait_for(lambda: _task(envelope.id, "ordering").status == "SUCCESS", message="the delivery's task to succeed")
        assert DeadLetter.objects.filter(message_id=envelope.id).count() == 1

    # Not in the flow contract: the in-memory bus runs no Celery tasks, so it has no task results.
    def test_every_step_of_a_checkout_is_a_task_result_flower_and_the_admin_show(self, bus, mugs):
        order_id = self._check_out(quantity=2, unit_price=mugs.price)

        bus.run_until_quiet()

        assert Order.objects.get(id=order_id).status == Order.Status.PAID
        steps = set(TaskResult.objects.filter(status="SUCCESS").values_list("task_name", flat=True))
        assert {"ordering.PlaceOrder", "catalog.ReserveStock", "payment.ProcessPayment"} <= steps
