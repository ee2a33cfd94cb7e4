"""Seed demo products and baskets through the contexts' own services.

Everything goes through the services the shop itself uses, so each step writes
the messages real use would: a product is listed at an opening price and then
given its price with ``product_change_price``, whose ``catalog.ProductPriceChanged``
(price version 1) is how ordering's price list and the baskets learn prices.
Seeding again adds only what is missing and never changes what is there: a
product already listed keeps its price and stock; a basket that has lines or is
checking out is left alone, and an empty one (its order started) is filled again.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction

from apps.basket.models import Basket
from apps.basket.services import basket_add_item
from apps.catalog.models import Product
from apps.catalog.services import product_change_price, product_create


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    name: str
    #: Listed at this first; the price change to ``price`` is what announces it.
    opening_price: Decimal
    price: Decimal
    stock: int


@dataclass(frozen=True)
class DemoBasket:
    customer_id: str
    #: (sku, quantity) pairs.
    lines: tuple[tuple[str, int], ...]
    #: What its checkout ends in, with the default settings.
    outcome: str


DEMO_PRODUCTS = (
    DemoProduct("MUG-1", "Mug", Decimal("9.50"), Decimal("10.00"), stock=100),
    DemoProduct("TEAPOT-1", "Teapot", Decimal("30.00"), Decimal("32.00"), stock=50),
    DemoProduct("DESK-1", "Standing desk", Decimal("650.00"), Decimal("640.00"), stock=40),
    DemoProduct("LAMP-1", "Lamp (the last one)", Decimal("45.00"), Decimal("49.00"), stock=1),
)

DEMO_BASKETS = (
    DemoBasket("alice", (("MUG-1", 2), ("TEAPOT-1", 1)), "Paid"),
    DemoBasket("bob", (("DESK-1", 20),),
               "Cancelled: payment declined (12,800.00 is over PAYMENT_APPROVAL_LIMIT, 10,000.00 by default)"),
    DemoBasket("carol", (("LAMP-1", 3),), "Cancelled: stock rejected (3 lamps asked for, 1 in stock)"),
)


@dataclass
class SeedReport:
    #: (product, its opening price) for each product listed now.
    listed: list[tuple[Product, Decimal]] = field(default_factory=list)
    already_listed: list[Product] = field(default_factory=list)
    filled: list[DemoBasket] = field(default_factory=list)
    #: (demo basket, why it was left as it is).
    left: list[tuple[DemoBasket, str]] = field(default_factory=list)


def demo_seed() -> SeedReport:
    """List the demo products and fill the demo baskets that need it, all or nothing."""
    report = SeedReport()
    with transaction.atomic():
        for demo in DEMO_PRODUCTS:
            product = Product.objects.filter(sku=demo.sku).first()
            if product is None:
                product = product_create(sku=demo.sku, name=demo.name, price=demo.opening_price, stock=demo.stock)
                report.listed.append((product, demo.opening_price))
            else:
                report.already_listed.append(product)
        for demo in DEMO_BASKETS:
            why_not = _why_not_fill(demo.customer_id)
            if why_not:
                report.left.append((demo, why_not))
                continue
            for sku, quantity in demo.lines:
                # At the catalog's price of the moment, as a shop shows it when the customer adds the item.
                basket_add_item(customer_id=demo.customer_id, sku=sku, quantity=quantity,
                                unit_price=Product.objects.get(sku=sku).price)
            report.filled.append(demo)
        # After the baskets: the change reaches them too, and they show the price they had before.
        prices = {demo.sku: demo.price for demo in DEMO_PRODUCTS}
        report.listed = [(product_change_price(sku=product.sku, new_price=prices[product.sku]), opening)
                         for product, opening in report.listed]
    return report


def _why_not_fill(customer_id: str) -> str | None:
    basket = Basket.objects.filter(customer_id=customer_id).first()
    if basket is None:
        return None
    if basket.status != Basket.Status.OPEN:
        return f"checking out (order {basket.pending_order_id})"
    if basket.lines.exists():
        return "already has lines"
    return None
