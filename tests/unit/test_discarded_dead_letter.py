"""A discarded dead letter is final: no retry, no second discard, from the service or the shell."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_create
from messaging import repair
from messaging.models import DeadLetter, DeadLetterAction, OutboxMessage
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db

FINAL = "it is discarded already: a discarded dead letter is final"


@pytest.fixture
def discarded():
    """A payment dead-lettered by a provider outage, then discarded by an operator."""
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_checkout(customer_id="c1")
    with override_settings(PAYMENT_PROVIDER_OUTAGE=True):
        TestBus().run_until_quiet()
    dead_letter = DeadLetter.objects.get()
    assert repair.discard([dead_letter], actor="bob", note="paid by phone").done
    return dead_letter


def _nothing_sent_again():
    return not OutboxMessage.objects.filter(redeliver_to__gt="").exists()


def test_a_discarded_dead_letter_is_never_retried(discarded):
    report = repair.retry(DeadLetter.objects.all(), actor="alice")

    assert report.done == []
    [(refused, why)] = report.refused
    assert refused.pk == discarded.pk and why.startswith(FINAL)
    assert "publish its data as a new message" in why
    assert DeadLetter.objects.get().status == DeadLetter.Status.DISCARDED
    assert _nothing_sent_again()
    assert list(DeadLetterAction.objects.values_list("action", flat=True)) == [DeadLetterAction.Action.DISCARDED]


def test_a_discarded_dead_letter_is_not_discarded_twice(discarded):
    report = repair.discard([discarded], actor="alice", note="again")

    assert report.done == [] and report.refused[0][1].startswith(FINAL)
    assert discarded.actions.get().note == "paid by phone"


@pytest.mark.parametrize("action", ["retry", "discard"])
def test_the_shell_refuses_a_discarded_dead_letter_named_by_id_and_says_why(discarded, action):
    out, err = StringIO(), StringIO()
    extra = ["--note", "again"] if action == "discard" else []

    with pytest.raises(CommandError, match="nothing was done"):
        call_command("dead_letters", action, "--id", str(discarded.pk), *extra, stdout=out, stderr=err)

    assert f"refused {discarded.pk}" in err.getvalue() and FINAL in err.getvalue()
    assert DeadLetter.objects.get().status == DeadLetter.Status.DISCARDED
    assert _nothing_sent_again()


def test_the_shell_acts_on_open_dead_letters_only_when_not_named(discarded):
    with pytest.raises(CommandError, match="no dead letter matches"):
        call_command("dead_letters", "retry", "--context", "payment", stdout=StringIO(), stderr=StringIO())
