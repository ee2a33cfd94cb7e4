"""Basket operations. Each owns its transaction and writes its outbox rows in it."""

import uuid
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from apps.basket import app_settings
from apps.basket.models import Basket, BasketLine
from apps.ordering.messages import ExpireOrder, PlaceOrder, PlaceOrderLine
from messaging import Outbox

#: Every message written here is this context's (its ``source``).
outbox = Outbox.for_module(__name__)


class BasketError(Exception):
    pass


def basket_add_item(*, customer_id: str, sku: str, quantity: int, unit_price: Decimal) -> BasketLine:
    with transaction.atomic():
        basket, _ = Basket.objects.select_for_update().get_or_create(customer_id=customer_id)
        _check_open(basket)
        line, created = BasketLine.objects.get_or_create(
            basket=basket, sku=sku, defaults={"quantity": quantity, "unit_price": unit_price}
        )
        if not created:
            line.quantity += quantity
            line.save(update_fields=["quantity"])
    return line


def basket_change_quantity(*, customer_id: str, sku: str, quantity: int) -> BasketLine:
    """Set how many of ``sku`` an open basket holds (at least one: removing is ``basket_remove_item``)."""
    if quantity < 1:
        raise BasketError(f"a line holds at least one {sku}; remove the line instead")
    with transaction.atomic():
        basket = Basket.objects.select_for_update().get(customer_id=customer_id)
        _check_open(basket)
        line = basket.lines.filter(sku=sku).first()
        if line is None:
            raise BasketError(f"the basket holds no {sku}")
        line.quantity = quantity
        line.save(update_fields=["quantity"])
    return line


def basket_remove_item(*, customer_id: str, sku: str) -> None:
    """Take ``sku`` out of an open basket; a SKU it does not hold is already out."""
    with transaction.atomic():
        basket = Basket.objects.select_for_update().get(customer_id=customer_id)
        _check_open(basket)
        basket.lines.filter(sku=sku).delete()


def basket_checkout(*, customer_id: str) -> uuid.UUID:
    """Ask ordering to place an order for the basket, by the checkout deadline; returns the order id.

    The deadline goes with the order, scheduled: if ordering never answers (its
    PlaceOrder dead-lettered) or the order stalls, ordering cancels it then,
    and the basket reopens on the OrderCancelled it hears. The order id is the
    checkout's correlation id: every message of the flow carries it, so an
    order's conversation is found by the order's own id.
    """
    with transaction.atomic():
        basket = Basket.objects.select_for_update().get(customer_id=customer_id)
        lines = list(basket.lines.order_by("sku"))
        if basket.status != Basket.Status.OPEN:
            raise BasketError(f"already checking out (order {basket.pending_order_id}); ordering has not answered yet")
        if not lines:
            raise BasketError("the basket is empty")
        order_id = uuid.uuid4()
        basket.status, basket.pending_order_id = Basket.Status.CHECKING_OUT, order_id
        basket.save(update_fields=["status", "pending_order_id"])
        outbox.send(PlaceOrder(
            order_id=order_id,
            customer_id=customer_id,
            lines=[PlaceOrderLine(sku=line.sku, quantity=line.quantity, unit_price=line.unit_price) for line in lines],
        ), correlation_id=order_id)
        outbox.send(ExpireOrder(order_id=order_id, customer_id=customer_id),
                    correlation_id=order_id, deliver_at=timezone.now() + app_settings.checkout_deadline())
    return order_id


def basket_reprice(*, sku: str, new_price: Decimal, price_version: int) -> int:
    """Apply a catalog price change to every basket holding ``sku``; returns lines changed.

    A change older than the one a line already has (a retried event arriving
    late) changes nothing.
    """
    with transaction.atomic():
        lines = list(BasketLine.objects.select_for_update().filter(sku=sku, price_version__lt=price_version))
        for line in lines:
            if line.unit_price != new_price:
                line.previous_unit_price, line.unit_price = line.unit_price, new_price
            line.price_version = price_version
            line.save(update_fields=["previous_unit_price", "unit_price", "price_version"])
    return len(lines)


def basket_reopen_for_order(*, order_id: uuid.UUID, placed: bool) -> None:
    """The order was cancelled: the basket waiting for it opens again.

    An order never placed (cancelled by its deadline first) gives the basket back
    its lines, to check out again. An order that was placed took the lines: the
    basket starts afresh, as when it hears the order start, so the end is the
    same whichever of ``OrderStarted`` and ``OrderCancelled`` it hears first.
    A basket that already moved on (emptied when the order started, or checking
    out another order) is left as it is.
    """
    if placed:
        basket_empty_for_order(order_id=order_id)
        return
    with transaction.atomic():
        basket = Basket.objects.select_for_update().filter(pending_order_id=order_id).first()
        if basket is None:
            return
        basket.status, basket.pending_order_id = Basket.Status.OPEN, None
        basket.save(update_fields=["status", "pending_order_id"])


def basket_empty_for_order(*, order_id: uuid.UUID) -> None:
    """The order was placed: its lines are the order's, and the basket it came from starts afresh."""
    with transaction.atomic():
        basket = Basket.objects.select_for_update().filter(pending_order_id=order_id).first()
        if basket is None:
            return
        basket.lines.all().delete()
        basket.status, basket.pending_order_id = Basket.Status.OPEN, None
        basket.save(update_fields=["status", "pending_order_id"])


def _check_open(basket: Basket) -> None:
    # A basket checking out has sent its lines to ordering: they are no longer the basket's to change.
    if basket.status != Basket.Status.OPEN:
        raise BasketError("the basket is checking out; wait for the order to start")
