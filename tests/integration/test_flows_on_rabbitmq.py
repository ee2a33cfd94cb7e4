"""The reference flows across real processes: workers per context, the relay,
RabbitMQ and PostgreSQL."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models.functions import Now
from django_celery_results.models import TaskResult

from apps.basket.models import Basket, BasketLine
from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.messages import ReserveStock, ReserveStockLine
from apps.catalog.models import Product, StockReservation
from apps.catalog.services import product_change_price, product_create
from apps.ordering.models import Order, PriceListEntry
from messaging.task_message import delivery_id
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.outbox import nudge_relay
from tests.senders import send
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def _sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:8]}"


def _basket_of_new_product(*, price: str, stock: int, quantity: int) -> tuple[str, str]:
    """A fresh product and a customer whose basket holds it; returns (sku, customer id)."""
    sku = _sku()
    product_create(sku=sku, name=f"Product {sku}", price=Decimal(price), stock=stock)
    basket_add_item(customer_id=f"c-{sku}", sku=sku, quantity=quantity, unit_price=Decimal(price))
    return sku, f"c-{sku}"


def _order_status(order_id) -> str | None:
    return Order.objects.filter(id=order_id).values_list("status", flat=True).first()


def test_a_price_change_reaches_basket_and_ordering_once_each(bus):
    sku, _ = _basket_of_new_product(price="10.00", stock=5, quantity=1)

    product_change_price(sku=sku, new_price=Decimal("11.00"))

    wait_for(lambda: PriceListEntry.objects.filter(sku=sku, price=Decimal("11.00")).exists(), message="ordering's price list")
    wait_for(lambda: BasketLine.objects.filter(sku=sku, unit_price=Decimal("11.00")).exists(), message="basket reprice")
    line = BasketLine.objects.get(sku=sku)
    assert line.previous_unit_price == Decimal("10.00")
    event_id = OutboxMessage.objects.get(message_type="catalog.ProductPriceChanged").message_id
    assert sorted(InboxMessage.objects.filter(message_id=event_id).values_list("consumer", flat=True)) == [
        "apps.basket.handlers.on_product_price_changed",
        "apps.ordering.handlers.on_product_price_changed",
    ]


def test_checkout_is_paid_end_to_end(bus):
    sku, customer = _basket_of_new_product(price="10.00", stock=5, quantity=2)

    order_id = basket_checkout(customer_id=customer)

    wait_for(lambda: _order_status(order_id) == Order.Status.PAID, message="the order to be paid")
    assert Product.objects.get(sku=sku).stock_available == 3
    wait_for(lambda: not BasketLine.objects.filter(basket__customer_id=customer).exists(), message="basket emptied")
    assert Basket.objects.get(customer_id=customer).status == Basket.Status.OPEN
    assert not DeadLetter.objects.exists()
    # Flower and the admin see every step: one task result per command.
    assert TaskResult.objects.filter(task_name="payment.ProcessPayment", status="SUCCESS").exists()


def test_a_declined_payment_cancels_the_order_and_releases_stock(bus):
    sku, customer = _basket_of_new_product(price="20000.00", stock=1, quantity=1)

    order_id = basket_checkout(customer_id=customer)

    wait_for(lambda: _order_status(order_id) == Order.Status.CANCELLED, message="the order to be cancelled")
    wait_for(
        lambda: StockReservation.objects.filter(order_id=order_id, status=StockReservation.Status.RELEASED).exists(),
        message="the stock to be released",
    )
    assert Product.objects.get(sku=sku).stock_available == 1
    assert Order.objects.get(id=order_id).cancel_reason.startswith("payment:")


def test_a_checkout_whose_place_order_is_dead_lettered_is_reopened_by_its_deadline(bus, settings):
    settings.CHECKOUT_DEADLINE = timedelta(hours=1)
    # Ordering cannot store this order: its total overflows the column (numeric(12, 2)), on every attempt.
    customer = f"c-{_sku()}"
    basket_add_item(customer_id=customer, sku=_sku(), quantity=1000, unit_price=Decimal("99999999.99"))

    order_id = basket_checkout(customer_id=customer)

    wait_for(lambda: DeadLetter.objects.filter(message_type="ordering.PlaceOrder",
                                               reason=DeadLetter.Reason.HANDLER_FAILED).exists(),
             message="the PlaceOrder to be dead-lettered")
    assert Basket.objects.get(customer_id=customer).status == Basket.Status.CHECKING_OUT

    # The hour passes: the deadline falls due, and the relay hears of it as of any commit.
    with transaction.atomic():
        OutboxMessage.objects.filter(message_type="ordering.ExpireOrder").update(available_at=Now())
        nudge_relay()

    wait_for(lambda: Basket.objects.get(customer_id=customer).status == Basket.Status.OPEN,
             message="the deadline to reopen the basket")
    order = Order.objects.get(id=order_id)
    assert (order.status, order.cancel_reason) == (
        Order.Status.CANCELLED, "checkout deadline passed before the order was placed"
    )
    assert Basket.objects.get(customer_id=customer).lines.count() == 1


def test_a_duplicate_delivery_changes_nothing_twice(bus):
    sku = _sku()
    product_create(sku=sku, name="Mug", price=Decimal("10.00"), stock=5)
    with transaction.atomic():
        envelope = send(ReserveStock(order_id=uuid.uuid4(), lines=[ReserveStockLine(sku=sku, quantity=2)]))
    row = OutboxMessage.objects.get(message_id=envelope.id)
    task_id = delivery_id(envelope.id, "catalog")
    wait_for(lambda: TaskResult.objects.filter(task_id=task_id, status="SUCCESS").exists(), message="first delivery")

    # The relay sends the same message again, as it does after dying before marking it.
    with transaction.atomic():
        OutboxMessage.objects.filter(id=row.id).update(published_at=None)
        nudge_relay()

    wait_for(
        lambda: '"duplicates": ["apps.catalog.handlers.reserve_stock"]'
        in (TaskResult.objects.filter(task_id=task_id).values_list("result", flat=True).first() or ""),
        message="the duplicate to be absorbed",
    )
    assert Product.objects.get(sku=sku).stock_available == 3
    assert InboxMessage.objects.filter(message_id=envelope.id).count() == 1


def test_a_rolled_back_transaction_publishes_nothing(bus):
    sku = _sku()
    product_create(sku=sku, name="Mug", price=Decimal("10.00"), stock=5)
    with pytest.raises(RuntimeError), transaction.atomic():
        product_change_price(sku=sku, new_price=Decimal("1.00"))
        raise RuntimeError("fails after the service call")

    # Anything else published afterwards arrives: the bus is moving, and the
    # rolled-back price change never did.
    product_change_price(sku=sku, new_price=Decimal("2.00"))
    wait_for(lambda: PriceListEntry.objects.filter(sku=sku).exists(), message="the committed price change")
    assert PriceListEntry.objects.get(sku=sku).price == Decimal("2.00")
    assert OutboxMessage.objects.filter(message_type="catalog.ProductPriceChanged").count() == 1
    assert Product.objects.get(sku=sku).price == Decimal("2.00")
