"""PostgreSQL down while the workers and the relay run (fault 8): a lost
connection is not a handler failure, so nothing is dead-lettered for it; a
service call made meanwhile fails whole; everything resumes by itself."""

import time
from decimal import Decimal

import pytest
from django.db import OperationalError
from django_celery_results.models import TaskResult

from apps.basket.models import BasketLine
from apps.basket.services import basket_add_item
from apps.catalog.models import Product
from apps.catalog.services import product_change_price, product_create
from apps.ordering.models import PriceListEntry
from messaging.task_message import delivery_id
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from tests.integration.postgresql import database_start, database_stop
from tests.integration.rabbitmq import rabbitmqctl
from tests.polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Seconds PostgreSQL stays down: longer than a failing handler's whole retry schedule
#: here (BUS_MAX_RETRIES retries 0.5-2 s apart) and than BUS_DATABASE_WAIT, so a lost
#: connection counted as a failure would have dead-lettered every message.
OUTAGE = 25
SKUS = ["DOWN-1", "DOWN-2", "DOWN-3"]


def test_events_taken_while_postgresql_is_down_wait_for_it_and_apply_once(bus):
    # Given a basket holding three products,
    for sku in SKUS:
        product_create(sku=sku, name=sku, price=Decimal("10.00"), stock=5)
        basket_add_item(customer_id="c-down", sku=sku, quantity=1, unit_price=Decimal("10.00"))
    # and a price change of each on the broker, for the basket and ordering both,
    with bus.frozen("worker-basket", "worker-ordering"):
        for sku in SKUS:
            product_change_price(sku=sku, new_price=Decimal("12.00"))
        ids = list(OutboxMessage.objects.values_list("message_id", flat=True))
        wait_for(lambda: not OutboxMessage.objects.filter(published_at__isnull=True).exists(), timeout=20,
                 message="the relay to publish the price changes")
        # when PostgreSQL goes down just as the subscribers take them,
        database_stop()
    try:
        # then a service call fails whole, and the processes outlast the outage.
        with pytest.raises(OperationalError):
            product_change_price(sku="DOWN-1", new_price=Decimal("99.00"))
        time.sleep(OUTAGE)
        assert all(process.poll() is None for process in bus.values())
    finally:
        database_start()

    # Once it is back, every event is applied once by each subscriber,
    for sku in SKUS:
        wait_for(lambda sku=sku: PriceListEntry.objects.filter(sku=sku, price=Decimal("12.00")).exists(),
                 timeout=90, message=f"ordering to apply the change of {sku}")
        wait_for(lambda sku=sku: BasketLine.objects.filter(sku=sku, unit_price=Decimal("12.00")).exists(),
                 timeout=30, message=f"basket to apply the change of {sku}")
    assert InboxMessage.objects.filter(message_id__in=ids).count() == 2 * len(ids)
    # their results are stored,
    deliveries = [delivery_id(i, context) for i in ids for context in ("basket", "ordering")]
    wait_for(lambda: TaskResult.objects.filter(task_id__in=deliveries, status="SUCCESS").count()
             == len(deliveries), timeout=30, message="the results to be stored")
    # the relay publishes again (and has collected the broker's dead letters meanwhile),
    product_change_price(sku="DOWN-1", new_price=Decimal("13.00"))
    wait_for(lambda: PriceListEntry.objects.filter(sku="DOWN-1", price=Decimal("13.00")).exists(), timeout=60,
             message="a change made after the outage to arrive")
    # nothing was dead-lettered,
    assert not DeadLetter.objects.exists()
    assert [q["messages"] for q in rabbitmqctl("list_queues", "name", "messages") if q["name"] == "dead-letters"] == [0]
    # and the call refused during the outage left nothing behind.
    assert not OutboxMessage.objects.filter(envelope__data__new_price="99.00").exists()
    assert Product.objects.get(sku="DOWN-1").price_version == 2
