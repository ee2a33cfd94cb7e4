"""Catalog operations. Each owns its transaction and writes its outbox rows in it."""

import uuid
from decimal import Decimal

from django.db import transaction

from apps.catalog import app_settings
from apps.catalog.messages import ProductPriceChanged, ReserveStockLine, StockRejected, StockReserved
from apps.catalog.models import Product, StockReservation
from messaging import Outbox

#: Every message written here is this context's (its ``source``).
outbox = Outbox.for_module(__name__)


def product_create(*, sku: str, name: str, price: Decimal, stock: int = 0) -> Product:
    return Product.objects.create(sku=sku, name=name, price=price, stock_available=stock)


def product_update(*, sku: str, name: str, price: Decimal, stock_available: int) -> Product:
    """Set a product's details; a new price goes through ``product_change_price``, in the same transaction.

    The price is compared with the locked row, so saving the same price again
    announces nothing, and a change is announced once.
    """
    with transaction.atomic():
        product = Product.objects.select_for_update().get(sku=sku)
        product.name, product.stock_available = name, stock_available
        product.save(update_fields=["name", "stock_available"])
        if price != product.price:
            product = product_change_price(sku=sku, new_price=price)
    return product


def product_change_price(*, sku: str, new_price: Decimal) -> Product:
    with transaction.atomic():
        product = Product.objects.select_for_update().get(sku=sku)
        old_price, product.price = product.price, new_price
        product.price_version += 1
        product.save(update_fields=["price", "price_version"])
        outbox.publish(ProductPriceChanged(
            sku=sku, old_price=old_price, new_price=new_price, price_version=product.price_version,
            currency=app_settings.currency(),
        ))
    return product


def stock_reserve(*, order_id: uuid.UUID, lines: list[ReserveStockLine]) -> bool:
    """Reserve every line or none; announce which. True if reserved."""
    with transaction.atomic():
        if StockReservation.objects.filter(order_id=order_id).exists():
            # Asked again for the same order (a resent command): same answer.
            outbox.publish(StockReserved(order_id=order_id))
            return True
        wanted = {line.sku: line.quantity for line in lines}
        products = {p.sku: p for p in Product.objects.select_for_update().filter(sku__in=wanted).order_by("sku")}
        short = sorted(sku for sku, quantity in wanted.items()
                       if sku not in products or products[sku].stock_available < quantity)
        if short:
            outbox.publish(StockRejected(order_id=order_id, reason=f"not enough stock for {', '.join(short)}"))
            return False
        for sku, quantity in wanted.items():
            products[sku].stock_available -= quantity
            products[sku].save(update_fields=["stock_available"])
        StockReservation.objects.create(order_id=order_id, lines=[line.model_dump() for line in lines])
        outbox.publish(StockReserved(order_id=order_id))
    return True


def stock_release(*, order_id: uuid.UUID) -> None:
    """Put a cancelled order's stock back; releasing twice or unknown orders is a no-op."""
    with transaction.atomic():
        reservation = (StockReservation.objects.select_for_update()
                       .filter(order_id=order_id, status=StockReservation.Status.RESERVED).first())
        if reservation is None:
            return
        for line in reservation.lines:
            product = Product.objects.select_for_update().get(sku=line["sku"])
            product.stock_available += line["quantity"]
            product.save(update_fields=["stock_available"])
        reservation.status = StockReservation.Status.RELEASED
        reservation.save(update_fields=["status"])
