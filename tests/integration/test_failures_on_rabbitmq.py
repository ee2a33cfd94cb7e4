"""Failures across real processes: retried with backoff, then a visible dead letter."""

import uuid

import pytest
from django.conf import settings
from django.db import transaction

from apps.catalog.messages import StockReserved
from apps.ordering.models import Order
from messaging.models import DeadLetter, InboxMessage
from tests.senders import publish
from messaging.task_message import delivery_id
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def test_a_handler_that_keeps_failing_is_retried_then_dead_lettered(bus):
    # Ordering cannot move an order it does not have: its handler raises every time.
    with transaction.atomic():
        envelope = publish(StockReserved(order_id=uuid.uuid4()))

    letter = wait_for(lambda: DeadLetter.objects.filter(message_id=envelope.id).first(), message="the dead letter")

    assert letter.reason == DeadLetter.Reason.HANDLER_FAILED
    assert (letter.context, letter.consumer) == ("ordering", "apps.ordering.handlers.on_stock_reserved")
    assert letter.attempts == settings.BUS_MAX_RETRIES + 1
    assert "DoesNotExist" in letter.error
    assert letter.body["id"] == str(envelope.id)
    assert not InboxMessage.objects.filter(message_id=envelope.id).exists()


def test_a_handler_that_fails_first_succeeds_on_a_retry(bus):
    # The event arrives before the state it needs (the order) is committed.
    order_id = uuid.uuid4()
    with transaction.atomic():
        envelope = publish(StockReserved(order_id=order_id))
    wait_for(lambda: _attempted(envelope.id), message="a first, failed attempt")

    Order.objects.create(id=order_id, customer_id="late", total="5.00")

    # Moved on by the retried event, the flow then runs to the end.
    wait_for(lambda: Order.objects.filter(id=order_id, status=Order.Status.PAID).exists(),
             message="the retried event to move the order on")
    assert not DeadLetter.objects.filter(message_id=envelope.id).exists()


def _attempted(message_id) -> bool:
    from django_celery_results.models import TaskResult

    return TaskResult.objects.filter(task_id=delivery_id(message_id, "ordering"), status="RETRY").exists()
