"""The reference contexts' flows, delivered through the in-memory bus."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.basket import app_settings
from apps.basket.models import Basket, BasketLine
from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.models import Product, StockReservation
from apps.catalog.services import product_change_price
from apps.ordering.models import Order, PriceListEntry
from apps.payment.models import Payment
from messaging.models import DeadLetter, OutboxMessage
from tests.memory_bus import deliver, deliver_all

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
    # One business conversation, named by the order: every message of the flow carries its id.
    assert {row.correlation_id for row in OutboxMessage.objects.all()} == {order_id}
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
    from messaging.delivery import consume

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


def _after_the_deadline():
    """The clock, once the checkout's deadline has passed."""
    return timezone.now() + app_settings.checkout_deadline() + timedelta(seconds=1)


def _check_out_two_mugs():
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))
    return basket_checkout(customer_id="c1")


def _deliver_late(message_type: str) -> None:
    """Hand over a message the bus withheld: its last retry came through, or a person retried its dead letter."""
    deliver(OutboxMessage.objects.get(message_type=message_type).envelope)
    deliver_all()


def test_the_checkout_deadline_waits_in_the_outbox_until_it_is_due(catalog_product):
    order_id = _check_out_two_mugs()

    deliver_all(withholding=("ordering.PlaceOrder",))  # dead-lettered: ordering never hears of it

    deadline = OutboxMessage.objects.get(message_type="ordering.ExpireOrder")
    assert deadline.published_at is None
    assert not Order.objects.filter(id=order_id).exists()
    assert Basket.objects.get().status == Basket.Status.CHECKING_OUT

    deliver_all(at=_after_the_deadline())

    deadline.refresh_from_db()
    assert deadline.published_at is not None


def test_a_checkout_whose_place_order_was_dead_lettered_is_cancelled_and_reopened_by_its_deadline(catalog_product):
    order_id = _check_out_two_mugs()
    deliver_all(withholding=("ordering.PlaceOrder",))

    deliver_all(at=_after_the_deadline())

    order = Order.objects.get(id=order_id)
    assert order.status == Order.Status.CANCELLED
    assert order.cancel_reason == "checkout deadline passed before the order was placed"
    basket = Basket.objects.get()
    assert (basket.status, basket.pending_order_id) == (Basket.Status.OPEN, None)
    assert [(line.sku, line.quantity) for line in basket.lines.all()] == [("MUG-1", 2)]
    assert Product.objects.get().stock_available == 5


def test_a_place_order_arriving_after_its_deadline_places_nothing(catalog_product):
    order_id = _check_out_two_mugs()
    deliver_all(withholding=("ordering.PlaceOrder",))
    deliver_all(at=_after_the_deadline())

    _deliver_late("ordering.PlaceOrder")

    assert Order.objects.get(id=order_id).status == Order.Status.CANCELLED
    assert not OutboxMessage.objects.filter(message_type__in=["catalog.ReserveStock", "ordering.OrderStarted"]).exists()
    assert Basket.objects.get().lines.count() == 1
    assert Product.objects.get().stock_available == 5


def test_a_completed_checkout_is_untouched_by_its_deadline_however_often_it_comes(catalog_product):
    order_id = _check_out_two_mugs()
    deliver_all()
    assert Order.objects.get(id=order_id).status == Order.Status.PAID

    deliver_all(at=_after_the_deadline())
    # The broker delivers the deadline a second time.
    deliver(OutboxMessage.objects.get(message_type="ordering.ExpireOrder").envelope)

    assert Order.objects.get(id=order_id).status == Order.Status.PAID
    assert Payment.objects.get(order_id=order_id).status == Payment.Status.SUCCEEDED
    assert Product.objects.get().stock_available == 3
    assert not OutboxMessage.objects.filter(message_type="ordering.OrderCancelled").exists()
    basket = Basket.objects.get()
    assert basket.status == Basket.Status.OPEN and not basket.lines.exists()


def test_an_order_stalled_awaiting_payment_is_cancelled_by_its_deadline_and_its_stock_released(catalog_product):
    order_id = _check_out_two_mugs()
    deliver_all(withholding=("payment.ProcessPayment",))  # the basket is emptied once the order starts
    assert Order.objects.get(id=order_id).status == Order.Status.AWAITING_PAYMENT

    deliver_all(at=_after_the_deadline())

    order = Order.objects.get(id=order_id)
    assert (order.status, order.cancel_reason) == (Order.Status.CANCELLED, "checkout deadline passed")
    assert Product.objects.get().stock_available == 5
    assert Basket.objects.get().status == Basket.Status.OPEN


def test_a_payment_arriving_after_the_deadline_cancelled_its_order_is_refunded(catalog_product):
    order_id = _check_out_two_mugs()
    deliver_all(withholding=("payment.ProcessPayment",))
    deliver_all(at=_after_the_deadline())

    _deliver_late("payment.ProcessPayment")

    assert Order.objects.get(id=order_id).status == Order.Status.CANCELLED
    assert Payment.objects.get(order_id=order_id).status == Payment.Status.REFUNDED
    assert OutboxMessage.objects.filter(message_type="payment.PaymentRefunded").count() == 1
    assert Product.objects.get().stock_available == 5
