"""RabbitMQ going away and coming back: nothing written meanwhile is lost, and
the relay and the workers resume by themselves."""

from decimal import Decimal

import pytest

from apps.basket.models import BasketLine
from apps.basket.services import basket_add_item
from apps.catalog.services import product_change_price, product_create
from apps.ordering.models import PriceListEntry
from messaging.models import OutboxMessage
from tests.integration.rabbitmq import broker_stopped
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def test_messages_written_while_rabbitmq_is_down_arrive_once_it_is_back(bus):
    product_create(sku="RESTART-1", name="Kettle", price=Decimal("20.00"), stock=3)
    basket_add_item(customer_id="c-restart", sku="RESTART-1", quantity=1, unit_price=Decimal("20.00"))

    with broker_stopped():
        # The service call does not need the broker: the change and its event commit together.
        product_change_price(sku="RESTART-1", new_price=Decimal("25.00"))
        row = OutboxMessage.objects.get(message_type="catalog.ProductPriceChanged")
        wait_for(lambda: OutboxMessage.objects.get(id=row.id).attempts > 0, timeout=30,
                 message="the relay to try and fail")
        assert OutboxMessage.objects.get(id=row.id).published_at is None

    wait_for(lambda: PriceListEntry.objects.filter(sku="RESTART-1", price=Decimal("25.00")).exists(),
             timeout=90, message="ordering to get the event after the restart")
    wait_for(lambda: BasketLine.objects.filter(sku="RESTART-1", unit_price=Decimal("25.00")).exists(),
             timeout=30, message="basket to get the event after the restart")
    assert all(process.poll() is None for process in bus.values())
