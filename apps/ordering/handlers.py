"""Ordering's command handler and subscriptions. Thin: call a service."""

from apps.catalog.messages import ProductPriceChanged, StockRejected, StockReserved
from apps.ordering.messages import ExpireOrder, PlaceOrder
from apps.ordering.services import (
    order_cancel,
    order_expire,
    order_mark_paid,
    order_place,
    order_request_payment,
    price_list_update,
)
from apps.payment.messages import PaymentFailed, PaymentSucceeded
from messaging import command_handler, event_subscriber


@command_handler(PlaceOrder)
def place_order(command: PlaceOrder) -> None:
    order_place(order_id=command.order_id, customer_id=command.customer_id, lines=command.lines)


@command_handler(ExpireOrder)
def expire_order(command: ExpireOrder) -> None:
    order_expire(order_id=command.order_id, customer_id=command.customer_id)


@event_subscriber(StockReserved)
def on_stock_reserved(event: StockReserved) -> None:
    order_request_payment(order_id=event.order_id)


@event_subscriber(StockRejected)
def on_stock_rejected(event: StockRejected) -> None:
    order_cancel(order_id=event.order_id, reason=f"stock: {event.reason}")


@event_subscriber(PaymentSucceeded)
def on_payment_succeeded(event: PaymentSucceeded) -> None:
    order_mark_paid(order_id=event.order_id)


@event_subscriber(PaymentFailed)
def on_payment_failed(event: PaymentFailed) -> None:
    order_cancel(order_id=event.order_id, reason=f"payment: {event.reason}")


@event_subscriber(ProductPriceChanged)
def on_product_price_changed(event: ProductPriceChanged) -> None:
    price_list_update(sku=event.sku, price=event.new_price, currency=event.currency, price_version=event.price_version)
