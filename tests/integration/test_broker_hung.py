"""RabbitMQ blocked by a memory alarm, or hung (its process stopped), while the
platform runs (fault 7): the relay times out waiting for confirms, marks
nothing it was not confirmed, backs off, and resumes when the broker does;
every message then has its effect once."""

from decimal import Decimal

import pytest

from apps.basket.models import BasketLine
from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_change_price, product_create
from apps.ordering.models import Order, PriceListEntry
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from tests.integration.rabbitmq import broker_paused, memory_alarm
from tests.polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _relay_failed_twice_on(message_id) -> OutboxMessage | None:
    return OutboxMessage.objects.filter(message_id=message_id, attempts__gte=2).first()


@pytest.mark.parametrize(("fault", "sku"), [(memory_alarm, "ALARM"), (broker_paused, "PAUSED")],
                         ids=["memory-alarm", "process-stopped"])
def test_the_relay_marks_nothing_unconfirmed_while_rabbitmq_is_blocked_and_resumes_after(bus, fault, sku):
    product_create(sku=sku, name="Teapot", price=Decimal("20.00"), stock=3)
    basket_add_item(customer_id=f"c-{sku}", sku=sku, quantity=1, unit_price=Decimal("20.00"))

    with fault():
        # Given a price change and a checkout committed while the broker takes nothing,
        product_change_price(sku=sku, new_price=Decimal("25.00"))
        order_id = basket_checkout(customer_id=f"c-{sku}")
        rows = list(OutboxMessage.objects.due().order_by("id"))  # not the checkout's deadline, due later
        # when the relay has tried to publish them, twice,
        failed = [wait_for(lambda row=row: _relay_failed_twice_on(row.message_id), timeout=60,
                           message="the relay to try twice and time out") for row in rows]
        # then it marked neither: the broker confirmed neither.
        assert all(row.published_at is None for row in failed)
        assert "ConfirmTimeoutError" in failed[0].last_error or "timed out" in failed[0].last_error
        assert all(process.poll() is None for process in bus.values())

    # Once the broker answers, everything goes through, each effect once.
    wait_for(lambda: PriceListEntry.objects.filter(sku=sku, price=Decimal("25.00")).exists(), timeout=90,
             message="ordering to get the price change")
    wait_for(lambda: BasketLine.objects.filter(sku=sku, unit_price=Decimal("25.00")).exists()
             or not BasketLine.objects.filter(sku=sku).exists(), timeout=30,
             message="basket to get the price change (or to be emptied by the order first)")
    wait_for(lambda: Order.objects.filter(id=order_id, status=Order.Status.PAID).exists(), timeout=90,
             message="the checkout to run to payment")
    for row in rows:
        consumers = InboxMessage.objects.filter(message_id=row.message_id)
        assert consumers.count() == consumers.values("consumer").distinct().count() >= 1
    assert InboxMessage.objects.filter(message_id=rows[0].message_id).count() == 2
    assert not DeadLetter.objects.exists()
    assert all(process.poll() is None for process in bus.values())
