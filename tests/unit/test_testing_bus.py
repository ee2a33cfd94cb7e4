"""messaging.testing, the in-memory bus users test their contexts with: what it promises them.

These use the ``bus`` fixture exactly as a user's tests do (``pytest_plugins =
["messaging.testing"]`` in ``tests/conftest.py``)."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.catalog.messages import ProductPriceChanged, StockReserved
from apps.ordering.messages import ExpireOrder
from apps.ordering.models import PriceListEntry
from messaging.models import DeadLetter, InboxMessage
from messaging.testing import DEAD_LETTERED, DUPLICATE, HANDLED, RETRIED, TestBus

pytestmark = pytest.mark.django_db

PRICE_CHANGE = ProductPriceChanged(sku="MUG-1", old_price=Decimal("10.00"), new_price=Decimal("12.00"), price_version=2, currency="EUR")


def test_an_event_published_as_its_context_reaches_every_subscriber_once(bus):
    published = bus.publish(PRICE_CHANGE)

    bus.run_until_quiet()

    assert published["source"] == "catalog"
    assert [envelope["id"] for envelope in bus.sent()] == [published["id"]]
    assert sorted(delivery.context for delivery in bus.handled(message_type="catalog.ProductPriceChanged")) == [
        "basket", "ordering",
    ]
    assert PriceListEntry.objects.get(sku="MUG-1").price == Decimal("12.00")


def test_a_message_delivered_again_is_a_duplicate_and_changes_nothing_twice(bus):
    published = bus.publish(PRICE_CHANGE)
    bus.run_until_quiet()

    again = bus.deliver_again(published["id"], context="ordering")

    assert [(delivery.context, delivery.outcome) for delivery in again] == [("ordering", DUPLICATE)]
    assert InboxMessage.objects.filter(message_id=published["id"], consumer__startswith="ordering:").count() == 1


def test_a_handler_that_keeps_failing_is_retried_then_dead_lettered_and_the_rest_flows(bus, settings):
    settings.BUS_MAX_RETRIES = 2
    # Ordering's subscriber fails for an order it never placed.
    bus.publish(StockReserved(order_id=uuid.uuid4()))
    bus.publish(PRICE_CHANGE)

    deliveries = bus.run_until_quiet()

    failing = [delivery for delivery in deliveries if delivery.message_type == "catalog.StockReserved"]
    assert [(delivery.attempt, delivery.outcome) for delivery in failing] == [
        (1, RETRIED), (2, RETRIED), (3, DEAD_LETTERED),
    ]
    [letter] = bus.dead_letters()
    assert (letter.context, letter.reason, letter.attempts) == ("ordering", DeadLetter.Reason.HANDLER_FAILED, 3)
    assert PriceListEntry.objects.filter(sku="MUG-1").exists()


def test_a_stopped_context_keeps_its_messages_until_it_is_back(bus):
    with bus.stopped("ordering"):
        bus.publish(PRICE_CHANGE)
        bus.run_until_quiet()
        assert [delivery.context for delivery in bus.handled()] == ["basket"]
        assert not PriceListEntry.objects.exists()

    bus.run_until_quiet()

    assert PriceListEntry.objects.get(sku="MUG-1").price_version == 2


def test_a_scheduled_message_waits_until_the_clock_says_so(bus):
    in_an_hour = timezone.now() + timedelta(hours=1)
    bus.send(ExpireOrder(order_id=uuid.uuid4(), customer_id="c-1"), deliver_at=in_an_hour)

    assert bus.run_until_quiet() == []
    first, *what_it_caused = bus.run_until_quiet(at=in_an_hour + timedelta(seconds=1))

    assert (first.context, first.message_type, first.outcome) == ("ordering", "ordering.ExpireOrder", HANDLED)


def test_messages_can_be_delivered_out_of_turn_in_another_order_than_published(bus):
    newer = bus.publish(ProductPriceChanged(sku="MUG-1", old_price=Decimal("12.00"), new_price=Decimal("15.00"),
                                            price_version=3, currency="EUR"))
    older = bus.publish(PRICE_CHANGE)

    bus.deliver(newer, context="ordering")
    bus.deliver(older, context="ordering")

    assert PriceListEntry.objects.get(sku="MUG-1").price == Decimal("15.00")


def test_a_message_loop_is_reported_instead_of_running_forever(bus, monkeypatch):
    bus.max_rounds = 3
    # Each round finds a message due again, as a handler that always sends another would.
    monkeypatch.setattr(TestBus, "_take_due_rows", staticmethod(lambda at: []))
    bus._queues["ordering"].append((bus.publish(PRICE_CHANGE), 1))
    monkeypatch.setattr(TestBus, "_deliver", lambda self, envelope, context, attempt: self._queues[context].append(
        (envelope, attempt)))

    with pytest.raises(AssertionError, match="message loop"):
        bus.run_until_quiet()


def test_delivering_again_a_message_never_written_is_a_clear_error(bus):
    with pytest.raises(LookupError, match="no message"):
        bus.deliver_again(uuid.uuid4())


def test_a_command_no_context_handles_fails_the_run_as_the_relay_refuses_it(bus, monkeypatch):
    bus.send(ExpireOrder(order_id=uuid.uuid4(), customer_id="c-1"))
    monkeypatch.setattr("messaging.testing.receiving_contexts", lambda message_type: [])

    with pytest.raises(AssertionError, match="no context handles ordering.ExpireOrder"):
        bus.run_until_quiet()
