"""Ordering's public language: placing an order and how it goes."""

import uuid
from decimal import Decimal

from pydantic import BaseModel, Field

from messaging import Command, Event


class PlaceOrderLine(BaseModel):
    """One line of a ``PlaceOrder``, at the price the customer was shown.

    Named after its command, not ``OrderLine``: that is the order's own line
    (``ordering.models.OrderLine``), which ordering makes from this one.
    """

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0)
    unit_price: Decimal = Field(ge=0, decimal_places=2)


class PlaceOrder(Command):
    order_id: uuid.UUID
    customer_id: str = Field(min_length=1, max_length=64)
    lines: list[PlaceOrderLine] = Field(min_length=1)


class ExpireOrder(Command):
    """The checkout's deadline: cancel the order unless it is paid or cancelled by now.

    Sent scheduled, with the PlaceOrder it watches over; an order never placed
    is recorded as cancelled, so a PlaceOrder arriving later places nothing.
    """

    order_id: uuid.UUID
    customer_id: str = Field(min_length=1, max_length=64)


class OrderStarted(Event):
    order_id: uuid.UUID
    customer_id: str
    total: Decimal


class OrderPaid(Event):
    order_id: uuid.UUID


class OrderCancelled(Event):
    order_id: uuid.UUID
    reason: str
    #: Whether the order had been placed (``OrderStarted`` published for it): its lines were then
    #: the order's. False for one cancelled by its deadline before it was placed, and for a
    #: message sent before this field existed.
    placed: bool = False
