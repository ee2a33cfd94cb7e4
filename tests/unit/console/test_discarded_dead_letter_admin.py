"""The admin's retry, on a discarded dead letter's page or as an action, is refused with why."""

from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import override_settings
from django.urls import reverse

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_create
from messaging import repair
from messaging.models import DeadLetter, OutboxMessage
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db


@pytest.fixture
def discarded():
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_checkout(customer_id="c1")
    with override_settings(PAYMENT_PROVIDER_OUTAGE=True):
        TestBus().run_until_quiet()
    dead_letter = DeadLetter.objects.get()
    repair.discard([dead_letter], actor="bob", note="paid by phone")
    return dead_letter


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_retry_button_of_a_discarded_dead_letter_is_refused_with_why(admin_client, discarded):
    response = admin_client.post(reverse("admin:messaging_deadletter_retry", args=[discarded.pk]), follow=True)

    assert any("not done, it is discarded already: a discarded dead letter is final" in m for m in _messages(response))
    assert DeadLetter.objects.get().status == DeadLetter.Status.DISCARDED
    assert not OutboxMessage.objects.filter(redeliver_to__gt="").exists()


def test_the_retry_action_on_every_dead_letter_leaves_a_discarded_one_discarded(admin_client, discarded):
    changelist = reverse("admin:messaging_deadletter_changelist")
    response = admin_client.post(f"{changelist}?status=all", {
        "action": "retry_selected", ACTION_CHECKBOX_NAME: [str(discarded.pk)],
    }, follow=True)

    assert any("a discarded dead letter is final" in m for m in _messages(response))
    assert DeadLetter.objects.get().status == DeadLetter.Status.DISCARDED
