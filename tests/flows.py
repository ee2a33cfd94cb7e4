"""The reference contexts' flows, written once and run on every bus.

``FlowContract`` holds the flows; it is not collected itself (its name does not
start with ``Test``). Each bus subclasses it and gives the flows a ``bus``
fixture: the in-memory twin in the unit suite (``tests/unit/test_flows.py``),
the platform's real processes on each broker in the integration suite, through
the broker contract (``tests/integration/broker_contract.py``, subclassed by
``test_contract_on_rabbitmq.py`` and ``test_contract_on_redis.py``), as
pyeventsourcing's adapters subclass its persistence test case.

A flow drives the contexts through their public services and reads their
models, never their handlers, and asks of the bus only what every bus can do:

- ``bus.run_until_quiet()``: publish every due outbox row and return once every message,
  and every message it led to, has been handled;
- ``bus.stopped(context)``: a context manager during which that context's
  worker is down; its messages wait for it on the broker, and are handled once
  it is back (at the next ``run_until_quiet()``).

The clock and a relay's mishaps live in the outbox, which every bus shares, so
the flows play them there: a deadline falls due when its row is made due now,
a message goes out twice when its row is marked unpublished again.
"""

import copy
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from apps.basket import app_settings
from apps.basket.models import Basket, BasketLine
from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.models import Product, StockReservation
from apps.catalog.services import product_change_price, product_create
from apps.ordering.models import Order, PriceListEntry
from apps.payment.models import Payment
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.repair import retry

SKU = "MUG-1"
CUSTOMER = "c1"
#: Over the payment context's approval limit (10 000.00): the payment is declined.
PRICE_OVER_THE_APPROVAL_LIMIT = Decimal("20000.00")


def _time_passes_beyond_the_checkout_deadline() -> None:
    """Every row scheduled until just after a checkout's deadline falls due now."""
    after_the_deadline = timezone.now() + app_settings.checkout_deadline() + timedelta(seconds=1)
    # By the database's clock, as the outbox reads it (Python's may run ahead of it).
    OutboxMessage.objects.filter(published_at__isnull=True, available_at__lte=after_the_deadline).update(
        available_at=Now()
    )


def _published_again(message_type: str) -> None:
    """The relay publishes a message again, as it does after dying between the
    broker's confirm and marking the row."""
    OutboxMessage.objects.filter(message_type=message_type).update(published_at=None)


class FlowContract:
    """The flows every bus must run alike; a subclass provides the ``bus`` fixture."""

    @pytest.fixture
    def bus(self):
        raise NotImplementedError("a subclass gives the flows its bus")

    @pytest.fixture
    def mugs(self, bus):
        """Five mugs at 10.00 in the catalog."""
        return product_create(sku=SKU, name="Mug", price=Decimal("10.00"), stock=5)

    def _check_out(self, *, quantity: int, unit_price: Decimal = Decimal("10.00")) -> uuid.UUID:
        basket_add_item(customer_id=CUSTOMER, sku=SKU, quantity=quantity, unit_price=unit_price)
        return basket_checkout(customer_id=CUSTOMER)

    # Prices

    def test_a_price_change_fans_out_to_basket_and_ordering_once_each(self, bus, mugs):
        basket_add_item(customer_id=CUSTOMER, sku=SKU, quantity=2, unit_price=Decimal("10.00"))

        product_change_price(sku=SKU, new_price=Decimal("12.50"))
        bus.run_until_quiet()

        line = BasketLine.objects.get()
        assert (line.unit_price, line.previous_unit_price, line.price_changed) == (
            Decimal("12.50"), Decimal("10.00"), True
        )
        assert PriceListEntry.objects.get(sku=SKU).price == Decimal("12.50")
        event = OutboxMessage.objects.get(message_type="catalog.ProductPriceChanged")
        # One inbox row per subscribing context (a consumer is named <context>:<type>).
        consumers = InboxMessage.objects.filter(message_id=event.message_id).values_list("consumer", flat=True)
        assert sorted(consumers) == ["basket:catalog.ProductPriceChanged", "ordering:catalog.ProductPriceChanged"]

    def test_a_late_older_price_change_does_not_overwrite_a_newer_one(self, bus, mugs):
        basket_add_item(customer_id=CUSTOMER, sku=SKU, quantity=1, unit_price=Decimal("10.00"))
        with transaction.atomic():
            product_change_price(sku=SKU, new_price=Decimal("11.00"))
            product_change_price(sku=SKU, new_price=Decimal("12.00"))
            # The first change is held back (a refused publish, say) and goes out after the second.
            first = OutboxMessage.objects.filter(message_type="catalog.ProductPriceChanged").order_by("id").first()
            OutboxMessage.objects.filter(id=first.id).update(available_at=timezone.now() + timedelta(hours=1))

        bus.run_until_quiet()
        OutboxMessage.objects.filter(id=first.id).update(available_at=Now())
        bus.run_until_quiet()

        assert OutboxMessage.objects.filter(message_type="catalog.ProductPriceChanged", published_at=None).count() == 0
        assert Product.objects.get().price_version == 2
        line = BasketLine.objects.get()
        assert (line.unit_price, line.previous_unit_price, line.price_version) == (
            Decimal("12.00"), Decimal("10.00"), 2
        )
        assert PriceListEntry.objects.get(sku=SKU).price == Decimal("12.00")

    # Checkout

    def test_checkout_ends_paid_with_stock_taken_and_basket_emptied(self, bus, mugs):
        order_id = self._check_out(quantity=2)
        assert Basket.objects.get().status == Basket.Status.CHECKING_OUT

        bus.run_until_quiet()

        order = Order.objects.get(id=order_id)
        assert (order.status, order.total) == (Order.Status.PAID, Decimal("20.00"))
        assert Product.objects.get().stock_available == 3
        assert Payment.objects.get(order_id=order_id).status == Payment.Status.SUCCEEDED
        basket = Basket.objects.get()
        assert basket.status == Basket.Status.OPEN and not basket.lines.exists()
        # One business conversation, named by the order: every message of the flow carries its id.
        assert {row.correlation_id for row in OutboxMessage.objects.all()} == {order_id}
        assert not DeadLetter.objects.exists()

    def test_a_checkouts_lines_keep_their_wire_format_and_are_kept_by_ordering_and_catalog(self, bus, mugs):
        order_id = self._check_out(quantity=2)

        bus.run_until_quiet()

        def lines_sent(message_type: str) -> list[dict]:
            return OutboxMessage.objects.get(message_type=message_type).envelope["data"]["lines"]

        assert lines_sent("ordering.PlaceOrder") == [{"sku": SKU, "quantity": 2, "unit_price": "10.00"}]
        assert lines_sent("catalog.ReserveStock") == [{"sku": SKU, "quantity": 2}]
        assert list(Order.objects.get(id=order_id).lines.values_list("sku", "quantity", "unit_price")) == [
            (SKU, 2, Decimal("10.00"))
        ]
        assert StockReservation.objects.get(order_id=order_id).lines == [{"sku": SKU, "quantity": 2}]

    def test_a_declined_payment_cancels_the_order_and_releases_its_stock(self, bus, mugs):
        order_id = self._check_out(quantity=1, unit_price=PRICE_OVER_THE_APPROVAL_LIMIT)

        bus.run_until_quiet()

        order = Order.objects.get(id=order_id)
        assert order.status == Order.Status.CANCELLED
        assert order.cancel_reason.startswith("payment: amount over the approval limit")
        assert Product.objects.get().stock_available == 5
        assert StockReservation.objects.get(order_id=order_id).status == StockReservation.Status.RELEASED

    def test_an_order_without_enough_stock_is_cancelled(self, bus, mugs):
        order_id = self._check_out(quantity=9)

        bus.run_until_quiet()

        order = Order.objects.get(id=order_id)
        assert order.status == Order.Status.CANCELLED
        assert order.cancel_reason == f"stock: not enough stock for {SKU}"
        assert Product.objects.get().stock_available == 5
        assert not Payment.objects.exists()

    # The checkout's deadline

    def _check_out_with_an_unreadable_place_order(self) -> tuple[uuid.UUID, dict]:
        """Check out two mugs, the PlaceOrder going out with data that breaks its
        contract (a sender's bug, say): ordering dead-letters it on sight and never
        places the order. Returns the order id and the PlaceOrder as it should have been."""
        with transaction.atomic():  # the relay sees the row only as it is at commit
            order_id = self._check_out(quantity=2)
            row = OutboxMessage.objects.get(message_type="ordering.PlaceOrder")
            intended = copy.deepcopy(row.envelope)
            row.envelope["data"]["lines"] = "two mugs"
            row.save(update_fields=["envelope"])
        return order_id, intended

    def test_the_checkout_deadline_waits_in_the_outbox_until_it_is_due(self, bus, mugs):
        order_id, _ = self._check_out_with_an_unreadable_place_order()

        bus.run_until_quiet()

        deadline = OutboxMessage.objects.get(message_type="ordering.ExpireOrder")
        assert deadline.published_at is None
        assert DeadLetter.objects.get().message_type == "ordering.PlaceOrder"
        assert not Order.objects.filter(id=order_id).exists()
        assert Basket.objects.get().status == Basket.Status.CHECKING_OUT

        _time_passes_beyond_the_checkout_deadline()
        bus.run_until_quiet()

        deadline.refresh_from_db()
        assert deadline.published_at is not None

    def test_a_checkout_whose_place_order_was_dead_lettered_is_cancelled_and_reopened_by_its_deadline(
        self, bus, mugs
    ):
        order_id, _ = self._check_out_with_an_unreadable_place_order()
        bus.run_until_quiet()

        _time_passes_beyond_the_checkout_deadline()
        bus.run_until_quiet()

        order = Order.objects.get(id=order_id)
        assert order.status == Order.Status.CANCELLED
        assert order.cancel_reason == "checkout deadline passed before the order was placed"
        basket = Basket.objects.get()
        assert (basket.status, basket.pending_order_id) == (Basket.Status.OPEN, None)
        assert [(line.sku, line.quantity) for line in basket.lines.all()] == [(SKU, 2)]
        assert Product.objects.get().stock_available == 5

    def test_a_place_order_arriving_after_its_deadline_places_nothing(self, bus, mugs):
        order_id, intended = self._check_out_with_an_unreadable_place_order()
        bus.run_until_quiet()
        _time_passes_beyond_the_checkout_deadline()
        bus.run_until_quiet()

        # An operator repairs the dead letter's data and retries it: it reaches ordering after the deadline.
        DeadLetter.objects.update(body=intended)
        assert retry(DeadLetter.objects.all(), actor="operator").done
        bus.run_until_quiet()

        assert InboxMessage.objects.filter(message_id=intended["id"]).exists()
        assert Order.objects.get(id=order_id).status == Order.Status.CANCELLED
        assert not OutboxMessage.objects.filter(message_type__in=["catalog.ReserveStock", "ordering.OrderStarted"]).exists()
        assert Basket.objects.get().lines.count() == 1
        assert Product.objects.get().stock_available == 5

    def test_a_completed_checkout_is_untouched_by_its_deadline_however_often_it_comes(self, bus, mugs):
        order_id = self._check_out(quantity=2)
        bus.run_until_quiet()
        assert Order.objects.get(id=order_id).status == Order.Status.PAID

        _time_passes_beyond_the_checkout_deadline()
        bus.run_until_quiet()
        _published_again("ordering.ExpireOrder")
        bus.run_until_quiet()

        assert Order.objects.get(id=order_id).status == Order.Status.PAID
        assert Payment.objects.get(order_id=order_id).status == Payment.Status.SUCCEEDED
        assert Product.objects.get().stock_available == 3
        assert not OutboxMessage.objects.filter(message_type="ordering.OrderCancelled").exists()
        basket = Basket.objects.get()
        assert basket.status == Basket.Status.OPEN and not basket.lines.exists()

    def test_an_order_stalled_awaiting_payment_is_cancelled_by_its_deadline_and_its_stock_released(self, bus, mugs):
        with bus.stopped("payment"):
            order_id = self._check_out(quantity=2)
            bus.run_until_quiet()
            assert Order.objects.get(id=order_id).status == Order.Status.AWAITING_PAYMENT

            _time_passes_beyond_the_checkout_deadline()
            bus.run_until_quiet()

            order = Order.objects.get(id=order_id)
            assert (order.status, order.cancel_reason) == (Order.Status.CANCELLED, "checkout deadline passed")
            assert Product.objects.get().stock_available == 5
            assert Basket.objects.get().status == Basket.Status.OPEN

    def test_a_payment_arriving_after_the_deadline_cancelled_its_order_is_refunded(self, bus, mugs):
        with bus.stopped("payment"):
            order_id = self._check_out(quantity=2)
            bus.run_until_quiet()
            _time_passes_beyond_the_checkout_deadline()
            bus.run_until_quiet()
            assert not Payment.objects.exists()

        bus.run_until_quiet()  # payment is back, and takes the ProcessPayment that waited for it

        assert Order.objects.get(id=order_id).status == Order.Status.CANCELLED
        assert Payment.objects.get(order_id=order_id).status == Payment.Status.REFUNDED
        assert OutboxMessage.objects.filter(message_type="payment.PaymentRefunded").count() == 1
        assert Product.objects.get().stock_available == 5

    # Delivery

    def test_a_duplicate_delivery_changes_nothing_twice(self, bus, mugs):
        order_id = self._check_out(quantity=2)
        bus.run_until_quiet()

        _published_again("catalog.ReserveStock")
        bus.run_until_quiet()

        reserve = OutboxMessage.objects.get(message_type="catalog.ReserveStock")
        assert reserve.published_at is not None
        # Catalog's inbox absorbed it: nothing reserved, nothing announced, a second time.
        assert InboxMessage.objects.filter(message_id=reserve.message_id).count() == 1
        assert OutboxMessage.objects.filter(message_type="catalog.StockReserved").count() == 1
        assert Product.objects.get().stock_available == 3
        assert Order.objects.get(id=order_id).status == Order.Status.PAID

    def test_a_rolled_back_transaction_publishes_nothing(self, bus, mugs):
        with pytest.raises(RuntimeError), transaction.atomic():
            product_change_price(sku=SKU, new_price=Decimal("1.00"))
            raise RuntimeError("fails after the service call")

        # Anything published afterwards arrives: the bus is moving, and the
        # rolled-back price change never did.
        product_change_price(sku=SKU, new_price=Decimal("2.00"))
        bus.run_until_quiet()

        assert PriceListEntry.objects.get(sku=SKU).price == Decimal("2.00")
        assert OutboxMessage.objects.filter(message_type="catalog.ProductPriceChanged").count() == 1
        assert Product.objects.get().price == Decimal("2.00")
