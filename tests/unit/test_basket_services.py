"""The basket's line services: only an open basket's lines change."""

from decimal import Decimal

import pytest

from apps.basket.models import BasketLine
from apps.basket.services import (
    BasketError,
    basket_add_item,
    basket_change_quantity,
    basket_checkout,
    basket_remove_item,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def open_basket(db):
    basket_add_item(customer_id="alice", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_add_item(customer_id="alice", sku="TEA-2", quantity=1, unit_price=Decimal("4.00"))


def _lines() -> dict[str, int]:
    return dict(BasketLine.objects.values_list("sku", "quantity"))


def test_an_open_baskets_quantity_changes_and_its_lines_are_removed(open_basket):
    basket_change_quantity(customer_id="alice", sku="MUG-1", quantity=3)
    basket_remove_item(customer_id="alice", sku="TEA-2")
    basket_remove_item(customer_id="alice", sku="TEA-2")  # already out: nothing to do

    assert _lines() == {"MUG-1": 3}


@pytest.mark.parametrize("edit", [
    lambda: basket_add_item(customer_id="alice", sku="LAMP-3", quantity=1, unit_price=Decimal("25.00")),
    lambda: basket_change_quantity(customer_id="alice", sku="MUG-1", quantity=3),
    lambda: basket_remove_item(customer_id="alice", sku="MUG-1"),
], ids=["add", "change quantity", "remove"])
def test_a_checking_out_baskets_lines_do_not_change(open_basket, edit):
    basket_checkout(customer_id="alice")

    with pytest.raises(BasketError, match="the basket is checking out"):
        edit()

    assert _lines() == {"MUG-1": 1, "TEA-2": 1}


def test_a_quantity_is_set_on_a_line_the_basket_holds_and_is_at_least_one(open_basket):
    with pytest.raises(BasketError, match="the basket holds no LAMP-3"):
        basket_change_quantity(customer_id="alice", sku="LAMP-3", quantity=1)
    with pytest.raises(BasketError, match="at least one MUG-1"):
        basket_change_quantity(customer_id="alice", sku="MUG-1", quantity=0)

    assert _lines() == {"MUG-1": 1, "TEA-2": 1}
