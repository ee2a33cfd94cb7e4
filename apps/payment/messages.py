"""Payment's public language: asking for a payment and how it went."""

import uuid
from decimal import Decimal

from pydantic import Field

from messaging import Command, Event


class ProcessPayment(Command):
    order_id: uuid.UUID
    customer_id: str = Field(min_length=1, max_length=64)
    amount: Decimal = Field(ge=0, decimal_places=2)


class RefundPayment(Command):
    """Give back what an order was charged: its payment came after it was cancelled."""

    order_id: uuid.UUID


class PaymentSucceeded(Event):
    order_id: uuid.UUID
    amount: Decimal


class PaymentFailed(Event):
    order_id: uuid.UUID
    reason: str


class PaymentRefunded(Event):
    order_id: uuid.UUID
    amount: Decimal
