"""A context's row held up by a dead letter says so, on its page and in its list, in the page's own query."""

from decimal import Decimal

import pytest
from django.apps import apps
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_create
from apps.ordering.models import Order
from messaging.models import DeadLetter
from messaging.repair import discard
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db

ORDERS = "admin:ordering_order_changelist"


def _checkouts(customers: list[str], *, outage: bool) -> list:
    product_create(sku=f"MUG-{len(customers)}-{outage}", name="Mug", price=Decimal("10.00"), stock=100)
    orders = []
    for customer in customers:
        basket_add_item(customer_id=customer, sku=f"MUG-{len(customers)}-{outage}", quantity=1,
                        unit_price=Decimal("10.00"))
        orders.append(basket_checkout(customer_id=customer))
    with override_settings(PAYMENT_PROVIDER_OUTAGE=outage):
        TestBus().run_until_quiet()
    return orders


def _page(admin_client, url: str) -> str:
    response = admin_client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def test_an_order_held_up_by_a_dead_letter_says_so_on_its_page(admin_client):
    [stuck] = _checkouts(["alice"], outage=True)
    [paid] = _checkouts(["bob"], outage=False)

    stuck_page = _page(admin_client, reverse("admin:ordering_order_change", args=[stuck]))
    paid_page = _page(admin_client, reverse("admin:ordering_order_change", args=[paid]))

    assert "held up: 1 dead letter" in stuck_page
    assert "held up" not in paid_page
    if apps.is_installed("console"):  # the console serves the list the note links to
        assert f'href="{reverse("admin:messaging_deadletter_changelist")}?correlation_id={stuck}"' in stuck_page


def test_the_order_list_says_which_orders_are_held_up(admin_client):
    stuck = _checkouts(["alice", "carol"], outage=True)
    _checkouts(["bob"], outage=False)

    page = _page(admin_client, reverse(ORDERS))

    assert page.count("held up: 1 dead letter") == 2
    for order_id in stuck:
        assert str(order_id) in page


def test_a_repaired_conversation_is_no_longer_held_up(admin_client):
    [stuck] = _checkouts(["alice"], outage=True)

    discard(DeadLetter.objects.all(), actor="operator", note="the customer paid by phone")

    assert "held up" not in _page(admin_client, reverse("admin:ordering_order_change", args=[stuck]))


def test_the_list_costs_as_many_queries_for_many_held_up_orders_as_for_one(admin_client):
    _checkouts(["alice"], outage=True)
    with CaptureQueriesContext(connection) as one_order:
        _page(admin_client, reverse(ORDERS))

    _checkouts(["bob", "carol", "dave", "erin"], outage=True)
    with CaptureQueriesContext(connection) as five_orders:
        page = _page(admin_client, reverse(ORDERS))

    assert page.count("held up: 1 dead letter") == 5
    assert len(five_orders) == len(one_order)
    assert Order.objects.count() == 5
