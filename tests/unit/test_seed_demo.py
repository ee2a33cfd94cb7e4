"""seed_demo: demo products and baskets made through the contexts' services, safe to run again
(on a database never migrated, from the shell: ``tests/process/test_seed_demo.py``)."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from apps.basket.models import Basket, BasketLine
from apps.basket.services import basket_checkout
from apps.catalog.models import Product
from apps.ordering.models import Order, PriceListEntry
from demo.seed import DEMO_BASKETS, DEMO_PRODUCTS
from messaging.models import OutboxMessage
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db


def _seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def _state() -> dict:
    return {
        "products": sorted(Product.objects.values_list("sku", "price", "price_version", "stock_available")),
        "lines": sorted(BasketLine.objects.values_list("basket__customer_id", "sku", "quantity", "unit_price")),
        "outbox": OutboxMessage.objects.count(),
    }


def test_seeding_lists_the_products_with_stock_and_announces_their_prices():
    output = _seed()

    assert _state()["products"] == sorted((p.sku, p.price, 1, p.stock) for p in DEMO_PRODUCTS)
    announced = OutboxMessage.objects.filter(message_type="catalog.ProductPriceChanged")
    assert sorted((row.envelope["source"], row.envelope["data"]["sku"], row.envelope["data"]["price_version"])
                  for row in announced) == sorted(("catalog", p.sku, 1) for p in DEMO_PRODUCTS)
    assert "listed MUG-1 Mug: 100 in stock, at 9.50, then price 10.00" in output


def test_ordering_learns_the_prices_and_the_baskets_follow_them_through_the_messages():
    _seed()
    assert not PriceListEntry.objects.exists()  # nothing but the messages tells ordering

    TestBus().run_until_quiet()

    assert sorted(PriceListEntry.objects.values_list("sku", "price", "price_version")) == sorted(
        (p.sku, p.price, 1) for p in DEMO_PRODUCTS
    )
    mug = BasketLine.objects.get(basket__customer_id="alice", sku="MUG-1")
    assert (mug.quantity, mug.unit_price, mug.previous_unit_price) == (2, Decimal("10.00"), Decimal("9.50"))


def test_seeding_fills_the_demo_baskets_and_says_what_to_do_next():
    output = _seed()

    assert sorted(Basket.objects.values_list("customer_id", flat=True)) == sorted(b.customer_id for b in DEMO_BASKETS)
    assert sorted((customer, sku, quantity) for customer, sku, quantity, _ in _state()["lines"]) == sorted(
        (b.customer_id, sku, quantity) for b in DEMO_BASKETS for sku, quantity in b.lines
    )
    assert "filled alice's basket: 2 x MUG-1, 1 x TEAPOT-1" in output
    assert 'run the action "Check out selected baskets"' in output


def test_seeding_twice_changes_nothing_the_second_time():
    _seed()
    TestBus().run_until_quiet()
    first = _state()

    output = _seed()

    assert _state() == first
    assert "MUG-1 already listed: left as it is (10.00, 100 in stock)" in output
    assert "alice's basket already has lines: left as it is" in output
    assert "filled" not in output and "listed MUG" not in output


def test_seeding_again_refills_an_emptied_basket_and_leaves_one_checking_out():
    _seed()
    TestBus().run_until_quiet()
    basket_checkout(customer_id="alice")
    TestBus().run_until_quiet()  # the order started: alice's basket is empty again
    waiting = basket_checkout(customer_id="bob")  # ordering has not answered yet

    output = _seed()

    assert sorted(BasketLine.objects.filter(basket__customer_id="alice").values_list("sku", "quantity", "unit_price")) \
        == [("MUG-1", 2, Decimal("10.00")), ("TEAPOT-1", 1, Decimal("32.00"))]
    assert f"bob's basket checking out (order {waiting}): left as it is" in output
    assert "filled alice's basket" in output


def test_the_seeded_checkouts_end_as_the_seed_says(settings):
    _seed()
    TestBus().run_until_quiet()

    orders = {basket.customer_id: basket_checkout(customer_id=basket.customer_id) for basket in DEMO_BASKETS}
    TestBus().run_until_quiet()

    outcome = {customer: Order.objects.get(id=order_id) for customer, order_id in orders.items()}
    assert outcome["alice"].status == Order.Status.PAID
    assert outcome["bob"].status == Order.Status.CANCELLED and outcome["bob"].cancel_reason.startswith("payment")
    assert outcome["carol"].status == Order.Status.CANCELLED and outcome["carol"].cancel_reason.startswith("stock")
    assert {b.customer_id: b.outcome.split(":")[0] for b in DEMO_BASKETS} == {
        "alice": "Paid", "bob": "Cancelled", "carol": "Cancelled"
    }
