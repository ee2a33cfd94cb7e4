"""Workers dying or stopping. Mid-handler, the transaction rolls back and the
message comes back (late ack, reject on worker loss); after the commit but
before the ack, the message comes back and the inbox absorbs it; on SIGTERM
the running handler finishes first. Every way: applied once."""

import contextlib
import os
import signal
import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django_celery_results.models import TaskResult

from apps.catalog.messages import ReserveStock, ReserveStockLine
from apps.catalog.models import Product, StockReservation
from apps.catalog.services import product_create
from messaging.task_message import delivery_id
from messaging.models import DeadLetter, InboxMessage
from tests.senders import send
from tests.polling import wait_for

pytestmark = pytest.mark.integration


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


def _reserve(sku: str, quantity: int):
    with transaction.atomic():
        return send(ReserveStock(order_id=uuid.uuid4(), lines=[ReserveStockLine(sku=sku, quantity=quantity)]))


def _task_result(message_id) -> TaskResult:
    # Catalog's delivery of the message: its task id (messaging.task_message.delivery_id).
    return TaskResult.objects.filter(task_id=delivery_id(message_id, "catalog")).first() or TaskResult(result="", status="")


def test_a_handler_killed_before_commit_is_redelivered_and_applied_once(bus):
    sku = f"KILL-{uuid.uuid4().hex[:8]}"
    product_create(sku=sku, name="Lamp", price=Decimal("30.00"), stock=5)

    with _product_row_locked(sku):
        envelope = _reserve(sku, 2)
        wait_for(lambda: _blocked_backends() >= 1, message="the handler to block inside its transaction")

        # SIGKILL every pool process of the catalog worker, the busy one among them.
        for pid in bus.children("worker-catalog"):
            os.kill(pid, signal.SIGKILL)
        # The killed handler's session still waits (PostgreSQL notices the dead client
        # only when the lock frees); a second waiting session is the redelivery.
        wait_for(lambda: _blocked_backends() >= 2, message="the redelivered message to reach the handler again")

    wait_for(lambda: InboxMessage.objects.filter(message_id=envelope.id).exists(), message="the effect")
    assert Product.objects.get(sku=sku).stock_available == 3
    assert StockReservation.objects.filter(order_id=envelope.data["order_id"]).count() == 1
    assert not DeadLetter.objects.filter(message_id=envelope.id).exists()
    assert bus["worker-catalog"].poll() is None  # the worker replaced its pool processes


def test_a_worker_killed_after_commit_but_before_ack_redelivers_and_the_inbox_absorbs_it(bus):
    sku = f"ACK-{uuid.uuid4().hex[:8]}"
    product_create(sku=sku, name="Chair", price=Decimal("40.00"), stock=5)

    # The worker acks only after storing the task's result: blocking that store
    # stops it between the handler's commit and the ack.
    lock_results = "LOCK TABLE django_celery_results_taskresult IN EXCLUSIVE MODE"
    with _held_in_another_transaction(lambda: connection.cursor().execute(lock_results)):
        envelope = _reserve(sku, 2)
        wait_for(lambda: InboxMessage.objects.filter(message_id=envelope.id).exists(), message="the committed effect")
        wait_for(lambda: _blocked_backends() >= 1, message="the worker to wait before its ack")
        bus.kill("worker-catalog")
    bus.start("worker-catalog")
    bus.wait_until_ready(["worker-catalog"])

    wait_for(lambda: '"duplicates": ["apps.catalog.handlers.reserve_stock"]' in _task_result(envelope.id).result,
             message="the redelivered message to be recognised as a duplicate")
    assert Product.objects.get(sku=sku).stock_available == 3
    assert InboxMessage.objects.filter(message_id=envelope.id).count() == 1


def test_sigterm_lets_the_running_handler_finish_and_ack(bus):
    # As in a deploy: the worker is asked to stop while a handler is running.
    sku = f"TERM-{uuid.uuid4().hex[:8]}"
    product_create(sku=sku, name="Desk", price=Decimal("90.00"), stock=5)
    worker = bus["worker-catalog"]

    with _product_row_locked(sku):
        envelope = _reserve(sku, 1)
        wait_for(lambda: _blocked_backends() >= 1, message="the handler to be running")
        worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=60) == 0  # a warm shutdown: it waited for the handler
    assert InboxMessage.objects.filter(message_id=envelope.id).count() == 1
    assert Product.objects.get(sku=sku).stock_available == 4
    assert _task_result(envelope.id).status == "SUCCESS"
    bus.start("worker-catalog")
    bus.wait_until_ready(["worker-catalog"])
