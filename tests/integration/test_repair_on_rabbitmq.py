"""What operators see and do, on real workers: a dead letter is a failed task (once),
each subscriber's run is its own task, and a retried dead letter is handled by the
one consumer that failed."""

import uuid
from decimal import Decimal

import pytest
from django.db import transaction
from django_celery_results.models import TaskResult

from apps.catalog.messages import StockReserved
from apps.catalog.services import product_change_price, product_create
from apps.ordering.models import Order
from messaging import repair
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from tests.senders import publish
from messaging.task_message import delivery_id
from tests.integration.rabbitmq import rabbitmqctl
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def _task(message_id, context) -> TaskResult | None:
    return TaskResult.objects.filter(task_id=delivery_id(message_id, context)).first()


def _broker_dead_letter_queue_is_empty() -> bool:
    return all(row["messages"] == 0 for row in rabbitmqctl("list_queues", "name", "messages")
               if row["name"] == "dead-letters")


def test_a_dead_letter_is_one_failed_task_and_a_retry_is_handled_by_the_real_worker(bus):
    # Ordering gives up on StockReserved for an order it does not have.
    order_id = uuid.uuid4()
    with transaction.atomic():
        envelope = publish(StockReserved(order_id=order_id))
    letter = wait_for(lambda: DeadLetter.objects.filter(message_id=envelope.id).first(), message="the dead letter")

    # Its task failed, with the reason, and the worker acknowledged it: the broker
    # never dead-letters it again, so the relay collects no second row.
    failed = wait_for(lambda: (r := _task(envelope.id, "ordering")) and r.status == "FAILURE" and r,
                      message="the task to be marked FAILURE")
    assert "DeadLettered" in failed.result and "handler_failed" in failed.result and str(letter.id) in failed.result
    assert _broker_dead_letter_queue_is_empty()
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


def test_each_subscriber_of_an_event_runs_a_task_of_its_own(bus):
    sku = f"TWO-{uuid.uuid4().hex[:8]}"
    product_create(sku=sku, name="Lamp", price=Decimal("20.00"), stock=1)
    product_change_price(sku=sku, new_price=Decimal("25.00"))
    message_id = OutboxMessage.objects.get(message_type="catalog.ProductPriceChanged",
                                           envelope__data__sku=sku).message_id

    tasks = {context: wait_for(lambda c=context: (r := _task(message_id, c)) and r.status == "SUCCESS" and r,
                               message=f"{context}'s task")
             for context in ("basket", "ordering")}

    assert tasks["basket"].task_id != tasks["ordering"].task_id
    assert tasks["basket"].worker.startswith("basket.") and tasks["ordering"].worker.startswith("ordering.")
    # The message id stays visible in each task's arguments.
    assert all(str(message_id) in task.task_kwargs for task in tasks.values())
    assert InboxMessage.objects.filter(message_id=message_id).count() == 2
