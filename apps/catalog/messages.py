"""The catalog's public language: what it announces and what it can be asked."""

import uuid
from decimal import Decimal

from pydantic import BaseModel, Field
from pydantic_extra_types.currency_code import ISO4217

from apps.catalog import app_settings
from messaging import Command, Event


class ReserveStockLine(BaseModel):
    """One line of a ``ReserveStock``: how many of a SKU to set aside."""

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0)


class ProductPriceChanged(Event):
    """A product's price changed: its old and new prices, both in its currency."""

    #: 2 added the required ``currency``; version 1 is read through ``price_in_catalog_currency``.
    version = 2

    sku: str = Field(min_length=1, max_length=64)
    old_price: Decimal = Field(ge=0, decimal_places=2)
    new_price: Decimal = Field(ge=0, decimal_places=2)
    #: Counts the product's price changes: a subscriber ignores one older than it has seen.
    price_version: int = Field(ge=1)
    #: The prices' currency, an ISO 4217 code.
    currency: ISO4217


@ProductPriceChanged.upcaster(from_version=1)
def price_in_catalog_currency(data: dict) -> dict:
    """Version 1 named no currency: its prices were in the catalog's (``CATALOG_CURRENCY``)."""
    return {**data, "currency": app_settings.currency()}


class ReserveStock(Command):
    order_id: uuid.UUID
    lines: list[ReserveStockLine] = Field(min_length=1)


class ReleaseStock(Command):
    order_id: uuid.UUID


class StockReserved(Event):
    order_id: uuid.UUID


class StockRejected(Event):
    order_id: uuid.UUID
    reason: str
