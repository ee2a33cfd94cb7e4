"""Events the basket subscribes to. Thin: call a service."""

from apps.basket.services import basket_empty_for_order, basket_reopen_for_order, basket_reprice
from apps.catalog.messages import ProductPriceChanged
from apps.ordering.messages import OrderCancelled, OrderStarted
from messaging import event_subscriber


@event_subscriber(ProductPriceChanged)
def on_product_price_changed(event: ProductPriceChanged) -> None:
    basket_reprice(sku=event.sku, new_price=event.new_price, price_version=event.price_version)


@event_subscriber(OrderStarted)
def on_order_started(event: OrderStarted) -> None:
    basket_empty_for_order(order_id=event.order_id)


@event_subscriber(OrderCancelled)
def on_order_cancelled(event: OrderCancelled) -> None:
    basket_reopen_for_order(order_id=event.order_id, placed=event.placed)
