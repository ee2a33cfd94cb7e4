"""The demonstration switch ``PAYMENT_PROVIDER_OUTAGE``: a failure a reader can make, find and repair."""

import importlib
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_create
from apps.ordering.models import Order
from apps.payment import app_settings
from apps.payment.models import Payment
from apps.payment.services import PaymentProviderUnavailableError, payment_process
from messaging.models import DeadLetter
from messaging.repair import retry


@pytest.fixture
def checkout(bus):
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))
    return basket_checkout(customer_id="c1")


def test_the_provider_is_up_by_default():
    assert app_settings.provider_outage() is False


@pytest.mark.parametrize("text, expected", [("true", True), ("ON", True), ("1", True), ("false", False),
                                             ("off", False), (" no ", False)])
def test_the_switch_is_read_from_the_environment(monkeypatch, text, expected):
    monkeypatch.setenv("PAYMENT_PROVIDER_OUTAGE", text)
    try:
        assert importlib.reload(app_settings).provider_outage() is expected
    finally:
        monkeypatch.delenv("PAYMENT_PROVIDER_OUTAGE")
        importlib.reload(app_settings)


def test_a_switch_that_says_neither_on_nor_off_stops_the_process_at_start(monkeypatch):
    monkeypatch.setenv("PAYMENT_PROVIDER_OUTAGE", "maybe")
    try:
        with pytest.raises(ImproperlyConfigured, match="PAYMENT_PROVIDER_OUTAGE='maybe' is not a switch"):
            importlib.reload(app_settings)
    finally:
        monkeypatch.delenv("PAYMENT_PROVIDER_OUTAGE")
        importlib.reload(app_settings)


@override_settings(PAYMENT_PROVIDER_OUTAGE=True)
def test_during_an_outage_a_charge_fails_clearly_and_charges_nothing(db):
    with pytest.raises(PaymentProviderUnavailableError, match="the payment provider is unavailable"):
        payment_process(order_id="6b4f2a52-2f68-4c1f-9d3c-6f2f1f1b1a11", customer_id="c1", amount=Decimal("5.00"))

    assert not Payment.objects.exists()


def test_a_payment_during_an_outage_ends_as_a_dead_letter_and_its_retry_pays_the_order(bus, checkout):
    # Given the provider down while the checkout's payment is asked for
    with override_settings(PAYMENT_PROVIDER_OUTAGE=True):
        deliveries = bus.run_until_quiet()

    # then the payment was retried, and became a dead letter an operator can read
    assert len([d for d in deliveries if d.message_type == "payment.ProcessPayment" and d.outcome == "retried"]) >= 1
    [dead_letter] = bus.dead_letters()
    assert (dead_letter.context, dead_letter.message_type, dead_letter.correlation_id) == (
        "payment", "payment.ProcessPayment", checkout)
    assert dead_letter.exception_type == "PaymentProviderUnavailableError"
    assert "the payment provider is unavailable (PAYMENT_PROVIDER_OUTAGE is on)" in dead_letter.error
    assert Order.objects.get(id=checkout).status == Order.Status.AWAITING_PAYMENT
    assert not Payment.objects.exists()

    # When the provider is back and the operator retries the dead letter
    assert retry(bus.dead_letters(), actor="operator").done
    bus.run_until_quiet()

    # then the order is paid, once
    assert Order.objects.get(id=checkout).status == Order.Status.PAID
    assert Payment.objects.get(order_id=checkout).status == Payment.Status.SUCCEEDED
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.RETRIED
