"""The catalog's services: a product's details and its price change together, or not at all."""

from decimal import Decimal

import pytest
from pydantic import ValidationError

from apps.catalog.models import Product
from apps.catalog.services import product_update
from messaging.models import OutboxMessage

pytestmark = pytest.mark.django_db


def test_updating_a_product_announces_a_new_price_once(catalog_product):
    product_update(sku="MUG-1", name="Big mug", price=Decimal("12.00"), stock_available=5)
    product_update(sku="MUG-1", name="Big mug", price=Decimal("12.00"), stock_available=4)

    [event] = OutboxMessage.objects.all()
    assert event.envelope["data"] == {"sku": "MUG-1", "old_price": "10.00", "new_price": "12.00", "price_version": 1, "currency": "EUR"}
    assert Product.objects.values_list("name", "price", "price_version", "stock_available").get() == (
        "Big mug", Decimal("12.00"), 1, 4
    )


def test_an_update_whose_price_change_cannot_be_announced_changes_nothing(catalog_product):
    with pytest.raises(ValidationError):
        product_update(sku="MUG-1", name="Big mug", price=Decimal("-1.00"), stock_available=0)

    assert Product.objects.values_list("name", "price", "price_version", "stock_available").get() == (
        "Mug", Decimal("10.00"), 0, 5
    )
    assert not OutboxMessage.objects.exists()
