"""Finding dead letters from the admin's search box: by the order (correlation) id, the message id,
or any value in the message as received (a customer, a SKU), as the outbox's search does."""

import uuid
from decimal import Decimal

import pytest
from django.test import override_settings
from django.urls import reverse

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_create
from messaging.models import DeadLetter
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db

DEAD_LETTERS = "admin:messaging_deadletter_changelist"


@pytest.fixture
def two_stuck_checkouts(db):
    """Alice's and Bob's checkouts, each payment dead-lettered by a provider outage."""
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    product_create(sku="TEAPOT-7", name="Teapot", price=Decimal("30.00"), stock=5)
    basket_add_item(customer_id="alice-42", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_add_item(customer_id="bob-17", sku="TEAPOT-7", quantity=1, unit_price=Decimal("30.00"))
    orders = {customer: basket_checkout(customer_id=customer) for customer in ("alice-42", "bob-17")}
    with override_settings(PAYMENT_PROVIDER_OUTAGE=True):
        TestBus().run_until_quiet()
    assert DeadLetter.objects.count() == 2
    return orders


def found(admin_client, search: str) -> list[uuid.UUID]:
    response = admin_client.get(reverse(DEAD_LETTERS), {"q": search})
    assert response.status_code == 200
    return sorted(row.correlation_id for row in response.context["cl"].result_list)


def test_an_order_id_finds_the_dead_letters_of_its_conversation(admin_client, two_stuck_checkouts):
    alice = two_stuck_checkouts["alice-42"]

    assert found(admin_client, str(alice)) == [alice]
    assert found(admin_client, str(alice)[:8]) == [alice]  # the short id a list shows


def test_a_message_id_finds_its_dead_letter(admin_client, two_stuck_checkouts):
    bob = two_stuck_checkouts["bob-17"]
    dead_letter = DeadLetter.objects.get(correlation_id=bob)

    assert found(admin_client, str(dead_letter.message_id)) == [bob]


def test_any_value_in_the_message_finds_it_and_every_term_must_match(admin_client, two_stuck_checkouts):
    alice, bob = two_stuck_checkouts["alice-42"], two_stuck_checkouts["bob-17"]

    assert found(admin_client, "alice-42") == [alice]  # the customer in ProcessPayment's data
    assert found(admin_client, "30.00") == [bob]  # the amount
    assert found(admin_client, "PaymentProviderUnavailable") == sorted([alice, bob])  # the error column still
    assert found(admin_client, "alice-42 30.00") == []
    assert found(admin_client, '"payment provider is unavailable" bob-17') == [bob]
    assert found(admin_client, "nobody-99") == []


def test_a_dead_letter_without_a_readable_envelope_is_found_by_its_columns(admin_client, db):
    message_id = uuid.uuid4()
    DeadLetter.objects.create(message_id=message_id, context="payment", reason=DeadLetter.Reason.INVALID_ENVELOPE,
                              error="body is not JSON", body="{not json", body_truncated=True)

    response = admin_client.get(reverse(DEAD_LETTERS), {"q": str(message_id)})

    assert [row.message_id for row in response.context["cl"].result_list] == [message_id]
