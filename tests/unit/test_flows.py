"""The reference contexts' flows, delivered through the in-memory bus."""

from decimal import Decimal

import pytest

from apps.basket.models import Basket, BasketLine
from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.models import Product, StockReservation
from apps.catalog.services import product_change_price
from apps.ordering.models import Order, PriceListEntry
from apps.payment.models import Payment
from messaging.models import DeadLetter, OutboxMessage
from tests.memory_bus import deliver_all

pytestmark = pytest.mark.django_db


def test_a_price_change_fans_out_to_basket_and_ordering(catalog_product):
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))

    product_change_price(sku="MUG-1", new_price=Decimal("12.50"))
    deliver_all()

    line = BasketLine.objects.get()
    assert (line.unit_price, line.previous_unit_price, line.price_changed) == (Decimal("12.50"), Decimal("10.00"), True)
    assert PriceListEntry.objects.get(sku="MUG-1").price == Decimal("12.50")


def test_checkout_ends_paid_with_stock_taken_and_basket_emptied(catalog_product):
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))

    order_id = basket_checkout(customer_id="c1")
    assert Basket.objects.get().status == Basket.Status.CHECKING_OUT
    deliver_all()

    order = Order.objects.get(id=order_id)
    assert (order.status, order.total) == (Order.Status.PAID, Decimal("20.00"))
    assert Product.objects.get().stock_available == 3
    assert Payment.objects.get(order_id=order_id).status == Payment.Status.SUCCEEDED
    basket = Basket.objects.get()
    assert basket.status == Basket.Status.OPEN and not basket.lines.exists()
    # One business conversation: every message of the flow shares the correlation id.
    assert {row.correlation_id for row in OutboxMessage.objects.all()} == {
        OutboxMessage.objects.get(message_type="ordering.PlaceOrder").correlation_id
    }
    assert not DeadLetter.objects.exists()


def test_a_declined_payment_cancels_the_order_and_releases_its_stock(catalog_product, settings):
    settings.PAYMENT_APPROVAL_LIMIT = Decimal("15.00")
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))

    order_id = basket_checkout(customer_id="c1")
    deliver_all()

    order = Order.objects.get(id=order_id)
    assert order.status == Order.Status.CANCELLED
    assert order.cancel_reason.startswith("payment: amount over the approval limit")
    assert Product.objects.get().stock_available == 5
    assert StockReservation.objects.get(order_id=order_id).status == StockReservation.Status.RELEASED


def test_an_order_without_enough_stock_is_cancelled(catalog_product):
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=9, unit_price=Decimal("10.00"))

    order_id = basket_checkout(customer_id="c1")
    deliver_all()

    order = Order.objects.get(id=order_id)
    assert order.status == Order.Status.CANCELLED
    assert order.cancel_reason == "stock: not enough stock for MUG-1"
    assert Product.objects.get().stock_available == 5
    assert not Payment.objects.exists()


def test_a_late_older_price_change_does_not_overwrite_a_newer_one(catalog_product):
    from apps.catalog.models import Product
    from messaging.consumer import consume

    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    product_change_price(sku="MUG-1", new_price=Decimal("11.00"))
    product_change_price(sku="MUG-1", new_price=Decimal("12.00"))
    first, second = OutboxMessage.objects.filter(message_type="catalog.ProductPriceChanged").order_by("id")

    # The second change arrives first; the first one comes late (a retry, say).
    for context in ("basket", "ordering"):
        consume(second.envelope, context=context)
        consume(first.envelope, context=context)

    assert Product.objects.get().price_version == 2
    line = BasketLine.objects.get()
    assert (line.unit_price, line.previous_unit_price, line.price_version) == (Decimal("12.00"), Decimal("10.00"), 2)
    assert PriceListEntry.objects.get(sku="MUG-1").price == Decimal("12.00")
