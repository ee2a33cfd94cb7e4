"""The checkout's deadline racing its PlaceOrder on PostgreSQL: whichever writes
the order first wins, and the other waits for it, then gives way without failing."""

import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection, transaction

from apps.ordering.messages import PlaceOrderLine
from apps.ordering.models import Order
from apps.ordering.services import order_expire, order_place
from messaging.models import OutboxMessage

pytestmark = pytest.mark.integration

LINES = [PlaceOrderLine(sku="RACE-1", quantity=1, unit_price=Decimal("10.00"))]


class HeldOpen(threading.Thread):
    """Runs ``work`` in a transaction kept open until ``release`` is set."""

    def __init__(self, work):
        super().__init__()
        self.work, self.inside, self.release, self.error = work, threading.Event(), threading.Event(), None

    def run(self):
        try:
            with transaction.atomic():
                self.work()
                self.inside.set()
                self.release.wait(timeout=30)
        except Exception as exc:
            self.error = exc
        finally:
            connection.close()


class Waiting(threading.Thread):
    """Runs ``work`` in its own transaction, keeping any error."""

    def __init__(self, work):
        super().__init__()
        self.work, self.error = work, None

    def run(self):
        try:
            self.work()
        except Exception as exc:
            self.error = exc
        finally:
            connection.close()


def _race(first, second) -> None:
    """``first`` writes and holds its transaction; ``second`` must wait for it, then finish."""
    holder = HeldOpen(first)
    holder.start()
    assert holder.inside.wait(timeout=10)
    waiter = Waiting(second)
    waiter.start()
    waiter.join(timeout=1)
    assert waiter.is_alive(), "the second should wait on the first one's order row"
    holder.release.set()
    holder.join(timeout=10)
    waiter.join(timeout=10)
    assert (holder.error, waiter.error) == (None, None)


def _ordering_wrote(order_id) -> list[str]:
    """The types of the messages ordering wrote about the order (workers may add others' answers)."""
    return sorted(OutboxMessage.objects.filter(envelope__source="ordering", envelope__data__order_id=str(order_id))
                  .values_list("message_type", flat=True))


def test_a_deadline_arriving_while_its_order_is_placed_waits_then_cancels_it(bus):
    order_id = uuid.uuid4()

    _race(lambda: order_place(order_id=order_id, customer_id="c-race", lines=LINES),
          lambda: order_expire(order_id=order_id, customer_id="c-race"))

    order = Order.objects.get(id=order_id)
    assert (order.status, order.cancel_reason) == (Order.Status.CANCELLED, "checkout deadline passed")
    assert _ordering_wrote(order_id) == ["catalog.ReserveStock", "ordering.OrderCancelled", "ordering.OrderStarted"]


def test_an_order_placed_while_its_deadline_is_recorded_waits_then_places_nothing(bus):
    order_id = uuid.uuid4()

    _race(lambda: order_expire(order_id=order_id, customer_id="c-race"),
          lambda: order_place(order_id=order_id, customer_id="c-race", lines=LINES))

    order = Order.objects.get(id=order_id)
    assert (order.status, order.total) == (Order.Status.CANCELLED, Decimal("0"))
    assert not order.lines.exists()
    assert _ordering_wrote(order_id) == ["ordering.OrderCancelled"]
