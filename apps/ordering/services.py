"""Ordering operations: the checkout flow, one step per message.

The flow, choreographed: PlaceOrder → order awaiting stock, OrderStarted and
ReserveStock → (StockReserved) awaiting payment, ProcessPayment →
(PaymentSucceeded) paid, or (StockRejected / PaymentFailed) cancelled, with
ReleaseStock when stock had been reserved. The checkout's deadline
(ExpireOrder, scheduled by the basket with PlaceOrder) cancels an order that
is neither paid nor cancelled by then, or one never placed at all; a payment
arriving after a cancellation is refunded (RefundPayment), as stock reserved
too late is released.
"""

import uuid
from decimal import Decimal

from django.db import transaction

from apps.catalog.messages import ReleaseStock, ReserveStock, ReserveStockLine
from apps.ordering.messages import OrderCancelled, OrderPaid, OrderStarted, PlaceOrderLine
from apps.ordering.models import Order, OrderLine, PriceListEntry
from apps.payment.messages import ProcessPayment, RefundPayment
from messaging import Outbox

#: Every message written here is this context's (its ``source``).
outbox = Outbox.for_module(__name__)


#: Why an order was cancelled by its checkout's deadline.
DEADLINE_REASON = "checkout deadline passed"


def order_place(*, order_id: uuid.UUID, customer_id: str, lines: list[PlaceOrderLine]) -> Order:
    with transaction.atomic():
        total = sum((line.quantity * line.unit_price for line in lines), Decimal("0"))
        # get_or_create: a deadline inserting the same order concurrently makes
        # this wait for it and then find it, instead of failing.
        order, placed = Order.objects.get_or_create(id=order_id, defaults={"customer_id": customer_id, "total": total})
        if not placed:
            return order  # the same checkout asked twice, or its deadline came first
        OrderLine.objects.bulk_create(
            OrderLine(order=order, sku=line.sku, quantity=line.quantity, unit_price=line.unit_price) for line in lines
        )
        outbox.publish(OrderStarted(order_id=order_id, customer_id=customer_id, total=total))
        outbox.send(ReserveStock(
            order_id=order_id,
            lines=[ReserveStockLine(sku=line.sku, quantity=line.quantity) for line in lines],
        ))
    return order


def order_request_payment(*, order_id: uuid.UUID) -> None:
    """Its stock is reserved: ask payment to charge the order (stock reserved after a cancellation goes back)."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(id=order_id)
        if order.status == Order.Status.CANCELLED:
            outbox.send(ReleaseStock(order_id=order_id))  # reserved too late: give it back
        if order.status != Order.Status.AWAITING_STOCK:
            return
        order.status = Order.Status.AWAITING_PAYMENT
        order.save(update_fields=["status", "updated_at"])
        outbox.send(ProcessPayment(order_id=order_id, customer_id=order.customer_id, amount=order.total))


def order_mark_paid(*, order_id: uuid.UUID) -> None:
    with transaction.atomic():
        order = Order.objects.select_for_update().get(id=order_id)
        if order.status == Order.Status.CANCELLED:
            outbox.send(RefundPayment(order_id=order_id))  # paid too late (its deadline passed): give it back
        if order.status != Order.Status.AWAITING_PAYMENT:
            return
        order.status = Order.Status.PAID
        order.save(update_fields=["status", "updated_at"])
        outbox.publish(OrderPaid(order_id=order_id))


def order_cancel(*, order_id: uuid.UUID, reason: str) -> None:
    """Cancel an unpaid order; stock reserved for it is released."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(id=order_id)
        if order.status not in (Order.Status.AWAITING_STOCK, Order.Status.AWAITING_PAYMENT):
            return
        stock_was_reserved = order.status == Order.Status.AWAITING_PAYMENT
        order.status, order.cancel_reason = Order.Status.CANCELLED, reason[:255]
        order.save(update_fields=["status", "cancel_reason", "updated_at"])
        if stock_was_reserved:
            outbox.send(ReleaseStock(order_id=order_id))
        outbox.publish(OrderCancelled(order_id=order_id, reason=reason, placed=True))


def order_expire(*, order_id: uuid.UUID, customer_id: str) -> None:
    """The checkout's deadline passed: cancel the order unless it is paid or cancelled already.

    An order never placed (its PlaceOrder still retrying, or dead-lettered) is
    recorded as cancelled, so a PlaceOrder arriving later places nothing. Either
    way OrderCancelled tells the basket, which reopens if it still waits.
    """
    with transaction.atomic():
        _, recorded = Order.objects.select_for_update().get_or_create(id=order_id, defaults={
            "customer_id": customer_id,
            "total": Decimal("0"),
            "status": Order.Status.CANCELLED,
            "cancel_reason": f"{DEADLINE_REASON} before the order was placed",
        })
        if recorded:
            outbox.publish(OrderCancelled(order_id=order_id, reason=DEADLINE_REASON, placed=False))
        else:
            order_cancel(order_id=order_id, reason=DEADLINE_REASON)


def price_list_update(*, sku: str, price: Decimal, currency: str, price_version: int) -> None:
    """Take a catalog price, unless the price list already has a newer one."""
    with transaction.atomic():
        entry = PriceListEntry.objects.select_for_update().filter(sku=sku).first()
        if entry is None:
            PriceListEntry.objects.create(sku=sku, price=price, currency=currency, price_version=price_version)
        elif entry.price_version < price_version:
            entry.price, entry.currency, entry.price_version = price, currency, price_version
            entry.save(update_fields=["price", "currency", "price_version", "updated_at"])
