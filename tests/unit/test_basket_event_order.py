"""The basket ends a checkout the same whichever order it hears ordering's events in
(each reaches it on a queue of its own, so the broker promises no order between them)."""

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from apps.basket.models import Basket
from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_create
from apps.ordering.models import Order
from messaging.models import OutboxMessage
from messaging.registry import registry
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db

#: What the basket hears from ordering about a checkout, from the registry (a new subscription is covered too).
ORDERING_EVENTS_THE_BASKET_HEARS = tuple(sorted(
    handler.message_type for handler in registry.handlers
    if handler.context == "basket" and handler.message_type.startswith("ordering.")
))


def _basket_state() -> tuple:
    basket = Basket.objects.get()
    return basket.status, basket.pending_order_id, tuple(sorted(basket.lines.values_list("sku", "quantity")))


def _stock_rejected(bus):
    """Nine mugs asked for, five in stock: catalog rejects, ordering cancels the placed order."""
    return _check_out(bus, quantity=9)


def _payment_declined(bus):
    return _check_out(bus, quantity=1, unit_price=Decimal("20000.00"))


def _paid(bus):
    return _check_out(bus, quantity=2)


def _cancelled_by_its_deadline_before_it_was_placed(bus):
    """The PlaceOrder is late (retrying, say): the deadline comes first, and the order is never placed."""
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))
    order_id = basket_checkout(customer_id="c1")
    OutboxMessage.objects.filter(message_type="ordering.PlaceOrder").update(
        available_at=timezone.now() + timedelta(days=1))
    OutboxMessage.objects.filter(message_type="ordering.ExpireOrder").update(available_at=Now())
    bus.run_until_quiet(withholding=ORDERING_EVENTS_THE_BASKET_HEARS)
    OutboxMessage.objects.filter(message_type="ordering.PlaceOrder").update(available_at=Now())
    bus.run_until_quiet(withholding=ORDERING_EVENTS_THE_BASKET_HEARS)
    return order_id


def _check_out(bus, *, quantity: int, unit_price: Decimal = Decimal("10.00")):
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=quantity, unit_price=unit_price)
    order_id = basket_checkout(customer_id="c1")
    bus.run_until_quiet(withholding=ORDERING_EVENTS_THE_BASKET_HEARS)
    return order_id


@pytest.mark.parametrize("checkout, order_status, expected_lines", [
    (_stock_rejected, Order.Status.CANCELLED, ()),
    (_payment_declined, Order.Status.CANCELLED, ()),
    (_paid, Order.Status.PAID, ()),
    (_cancelled_by_its_deadline_before_it_was_placed, Order.Status.CANCELLED, (("MUG-1", 2),)),
], ids=["stock rejected", "payment declined", "paid", "cancelled before it was placed"])
def test_a_checkout_ends_the_same_whichever_event_the_basket_hears_first(checkout, order_status, expected_lines):
    # Given a checkout run to its end, what ordering announced to the basket held back
    bus = TestBus()
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    order_id = checkout(bus)
    assert Order.objects.get(id=order_id).status == order_status
    held_back = [envelope for message_type in ORDERING_EVENTS_THE_BASKET_HEARS for envelope in bus.sent(message_type)]
    assert held_back, "ordering announced something to the basket"

    # When the basket hears them in each possible order (and each twice, as a broker may redeliver)
    ends = {}
    for order in itertools.permutations(held_back):
        with transaction.atomic():
            for envelope in [*order, *order]:
                bus.deliver(envelope, context="basket")
            ends[tuple(envelope["type"] for envelope in order)] = _basket_state()
            transaction.set_rollback(True)

    # then the basket ends the same every time: open again, with its lines only if the order was never placed
    assert set(ends.values()) == {(Basket.Status.OPEN, None, expected_lines)}, ends
    assert not bus.dead_letters()


def test_an_order_cancelled_announced_before_placed_was_a_field_still_reopens_the_basket():
    # Given a checkout whose cancellation was written by ordering's code before `placed` existed
    # (such a message may wait in basket's queue across the deploy)
    bus = TestBus()
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    _stock_rejected(bus)
    [cancelled] = bus.sent("ordering.OrderCancelled")
    old_format = {**cancelled, "data": {k: v for k, v in cancelled["data"].items() if k != "placed"}}

    # When the basket hears it, without OrderStarted (its lines come back: the old behaviour, documented)
    [delivery] = bus.deliver(old_format, context="basket")

    # Then it is handled, not dead-lettered, and the basket is open again
    assert delivery.outcome == "handled", delivery.report
    assert not bus.dead_letters()
    assert _basket_state() == (Basket.Status.OPEN, None, (("MUG-1", 9),))
