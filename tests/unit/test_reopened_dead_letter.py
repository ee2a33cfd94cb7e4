"""A discarded dead letter is neither retried nor discarded again, until a person reopens it
with a note: then it is open, retried like any other, and its history tells it all."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.ordering.models import Order
from messaging import repair
from messaging.models import DeadLetter, DeadLetterAction, OutboxMessage
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db

REOPEN_FIRST = "it is discarded already: reopen it first if it needs repair after all"


@pytest.fixture
def discarded(payment_dead_letter):
    """A payment dead-lettered by a provider outage, then discarded by an operator."""
    assert repair.discard([payment_dead_letter], actor="bob", note="paid by phone").done
    return payment_dead_letter


def _nothing_sent_again():
    return not OutboxMessage.objects.filter(redeliver_to__gt="").exists()


def test_a_discarded_dead_letter_is_not_retried_and_the_refusal_says_reopen_first(discarded):
    report = repair.retry(DeadLetter.objects.all(), actor="alice")

    assert report.done == []
    [(refused, why)] = report.refused
    assert refused.pk == discarded.pk and why == REOPEN_FIRST
    assert DeadLetter.objects.get().status == DeadLetter.Status.DISCARDED
    assert _nothing_sent_again()


def test_a_discarded_dead_letter_is_not_discarded_twice(discarded):
    report = repair.discard([discarded], actor="alice", note="again")

    assert report.done == [] and report.refused[0][1] == REOPEN_FIRST
    assert discarded.actions.get().note == "paid by phone"


def test_a_reopened_dead_letter_is_retried_and_pays_the_order_and_the_history_tells_it(discarded):
    # Given a discard made by mistake, reopened with why
    report = repair.reopen([discarded], actor="carol", note="the phone payment never happened")
    assert report.done == [discarded] and _nothing_sent_again()
    discarded.refresh_from_db()
    assert discarded.status == DeadLetter.Status.OPEN

    # When it is retried, the provider back
    repair.retry([discarded], actor="carol")
    TestBus().run_until_quiet()

    # Then the order is paid, and the history has every act, in order, with who and why
    assert Order.objects.get().status == Order.Status.PAID
    assert [(a.action, a.actor, a.note) for a in discarded.actions.all()] == [
        (DeadLetterAction.Action.DISCARDED, "bob", "paid by phone"),
        (DeadLetterAction.Action.REOPENED, "carol", "the phone payment never happened"),
        (DeadLetterAction.Action.RETRIED, "carol", ""),
    ]


def test_only_a_discarded_dead_letter_is_reopened_and_a_reopen_needs_a_note(discarded):
    repair.reopen([discarded], actor="carol", note="needed after all")

    report = repair.reopen([discarded], actor="carol", note="again")

    assert report.done == [] and report.refused[0][1] == "it is open: only a discarded dead letter is reopened"
    with pytest.raises(ValueError, match="note"):
        repair.reopen([discarded], actor="carol", note="  ")


def test_a_dry_run_reopens_nothing(discarded):
    report = repair.reopen([discarded], actor="carol", note="checking", dry_run=True)

    assert report.done == [discarded]
    assert DeadLetter.objects.get().status == DeadLetter.Status.DISCARDED


@pytest.mark.parametrize("action", ["retry", "discard"])
def test_the_shell_refuses_a_discarded_dead_letter_named_by_id_and_says_why(discarded, action):
    out, err = StringIO(), StringIO()
    extra = ["--note", "again"] if action == "discard" else []

    with pytest.raises(CommandError, match="nothing was done"):
        call_command("dead_letters", action, "--id", str(discarded.pk), *extra, stdout=out, stderr=err)

    assert f"refused {discarded.pk}" in err.getvalue() and REOPEN_FIRST in err.getvalue()
    assert DeadLetter.objects.get().status == DeadLetter.Status.DISCARDED
    assert _nothing_sent_again()


def test_the_shell_reopens_the_discarded_dead_letters_its_filters_select(discarded):
    out = StringIO()

    call_command("dead_letters", "reopen", "--context", "payment", "--note", "needed after all", "--actor", "dave",
                 stdout=out, stderr=StringIO())

    assert f"reopened {discarded.pk}" in out.getvalue() and "reopened 1, refused 0" in out.getvalue()
    assert DeadLetter.objects.get().status == DeadLetter.Status.OPEN
    assert discarded.actions.last().actor == "dave"


def test_the_shell_acts_on_open_dead_letters_only_when_not_named(discarded):
    with pytest.raises(CommandError, match="no dead letter matches"):
        call_command("dead_letters", "retry", "--context", "payment", stdout=StringIO(), stderr=StringIO())
