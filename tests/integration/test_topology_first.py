"""An event published before a subscriber ever ran is not lost: the relay
declares every subscriber queue before its first publish."""

import subprocess
from decimal import Decimal

import pytest
from django.conf import settings

from apps.basket.models import BasketLine
from apps.basket.services import basket_add_item
from apps.catalog.services import product_change_price, product_create
from apps.ordering.models import PriceListEntry
from tests.polling import wait_for

pytestmark = pytest.mark.integration

BASKET_PRICES = "basket.events.catalog.ProductPriceChanged"


def test_an_event_waits_in_the_queue_of_a_subscriber_that_has_not_started_yet(bus):
    # A broker where basket has never run: no worker, no queue.
    bus["worker-basket"].terminate()
    assert bus["worker-basket"].wait(timeout=60) == 0
    vhost = settings.CELERY_BROKER_URL.rsplit("/", 1)[-1]
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", "-p", vhost, BASKET_PRICES], check=True, timeout=60)
    # A relay starting now declares the topology, basket's queue included.
    bus.kill("relay")
    bus.start("relay")

    product_create(sku="EARLY-1", name="Vase", price=Decimal("15.00"), stock=2)
    basket_add_item(customer_id="c-early", sku="EARLY-1", quantity=1, unit_price=Decimal("15.00"))
    product_change_price(sku="EARLY-1", new_price=Decimal("17.00"))
    wait_for(lambda: PriceListEntry.objects.filter(sku="EARLY-1").exists(), message="ordering to get the event")

    bus.start("worker-basket")
    bus.wait_until_ready(["worker-basket"])

    wait_for(lambda: BasketLine.objects.filter(sku="EARLY-1", unit_price=Decimal("17.00")).exists(),
             message="basket to find the event waiting in its queue")
