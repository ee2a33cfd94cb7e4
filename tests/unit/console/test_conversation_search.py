"""Finding messages by any value in them, from the outbox admin's search box (through the
trigram index on PostgreSQL: ``tests/integration/test_conversation_search_on_postgresql.py``;
migrated on the embedded default: ``tests/process/console/test_conversation_search.py``)."""

import uuid
from decimal import Decimal

import pytest
from django.urls import reverse

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_create
from messaging.models import OutboxMessage
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db

OUTBOX = "admin:messaging_outboxmessage_changelist"


@pytest.fixture
def two_checkouts(db):
    """Alice's and Bob's checkouts of different products, delivered."""
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    product_create(sku="TEAPOT-7", name="Teapot", price=Decimal("30.00"), stock=5)
    basket_add_item(customer_id="alice-42", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_add_item(customer_id="bob-17", sku="TEAPOT-7", quantity=1, unit_price=Decimal("30.00"))
    orders = {customer: basket_checkout(customer_id=customer) for customer in ("alice-42", "bob-17")}
    TestBus().run_until_quiet()
    return orders


def found(admin_client, search: str) -> list[tuple[str, uuid.UUID]]:
    response = admin_client.get(reverse(OUTBOX), {"q": search})
    return sorted((row.message_type, row.correlation_id) for row in response.context["cl"].result_list)


def test_a_value_in_the_data_finds_every_message_that_mentions_it(admin_client, two_checkouts):
    alice = two_checkouts["alice-42"]

    assert found(admin_client, "alice-42") == [
        ("ordering.ExpireOrder", alice), ("ordering.OrderStarted", alice), ("ordering.PlaceOrder", alice),
        ("payment.ProcessPayment", alice),
    ]
    assert found(admin_client, "TEAPOT-7") == [
        ("catalog.ReserveStock", two_checkouts["bob-17"]), ("ordering.PlaceOrder", two_checkouts["bob-17"]),
    ]


def test_an_order_id_finds_its_messages_and_no_others(admin_client, two_checkouts):
    alice = two_checkouts["alice-42"]

    messages = found(admin_client, str(alice).upper())

    assert {correlation for _, correlation in messages} == {alice}
    assert len(messages) == OutboxMessage.objects.filter(correlation_id=alice).count() == 8


def test_every_term_of_a_search_must_appear(admin_client, two_checkouts):
    assert found(admin_client, "alice-42 ProcessPayment") == [
        ("payment.ProcessPayment", two_checkouts["alice-42"])]
    assert found(admin_client, '"alice-42" "no such thing"') == []
