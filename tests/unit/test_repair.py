"""Repairing dead letters: a retry goes back, with its own id, to the one consumer that
failed, through the outbox; a discard archives; both are recorded with who and why."""

import datetime
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.catalog.messages import ProductPriceChanged, StockReserved
from apps.ordering.models import Order
from messaging import repair
from messaging.delivery import consume
from messaging.dead_letters import dead_letter_record
from messaging.models import DeadLetter, DeadLetterAction, InboxMessage, OutboxMessage
from tests.senders import publish
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db

#: An event both basket and ordering subscribe to.
PRICE_CHANGE = ProductPriceChanged(sku="MUG-1", old_price=Decimal("4.00"), new_price=Decimal("3.00"), price_version=1, currency="EUR")


def _published(event) -> dict:
    """An event's envelope, taken off the outbox as the relay would."""
    envelope = publish(event).to_json_dict()
    OutboxMessage.objects.filter(message_id=envelope["id"]).update(published_at=timezone.now())
    return envelope


@pytest.fixture
def stock_reserved_for_a_missing_order():
    """Ordering's handler gave up on StockReserved: the order it names did not exist yet."""
    order_id = uuid.uuid4()
    envelope = _published(StockReserved(order_id=order_id))
    report = consume(envelope, context="ordering", last_attempt=True)
    assert report["dead_lettered"] == DeadLetter.Reason.HANDLER_FAILED
    return order_id, DeadLetter.objects.get(message_id=envelope["id"])


def _dead_letter(envelope: dict, *, context: str, **fields) -> DeadLetter:
    return dead_letter_record(reason=DeadLetter.Reason.HANDLER_FAILED, context=context, body=envelope,
                              error=RuntimeError("boom"), message_id=envelope["id"],
                              message_type=envelope["type"], **fields)


def test_a_retry_is_an_outbox_row_with_the_original_id_for_the_failing_context_only(
    stock_reserved_for_a_missing_order,
):
    _, letter = stock_reserved_for_a_missing_order

    report = repair.retry([letter], actor="alice")

    assert report.done == [letter] and report.refused == []
    row = OutboxMessage.objects.get(redeliver_to="ordering")
    assert row.message_id == letter.message_id
    assert row.envelope["id"] == letter.body["id"] and row.envelope["data"] == letter.body["data"]
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.RETRIED
    [action] = letter.actions.all()
    assert (action.action, action.actor, action.outbox_message) == (DeadLetterAction.Action.RETRIED, "alice", row)


def test_a_retried_message_is_handled_once_its_cause_is_fixed_and_the_history_says_so(
    stock_reserved_for_a_missing_order,
):
    order_id, letter = stock_reserved_for_a_missing_order
    Order.objects.create(id=order_id, customer_id="c-1", total=Decimal("5.00"))
    repair.retry([letter], actor="alice")
    action = letter.actions.get()
    assert repair.retry_outcome(action).state == "waiting"

    deliveries = TestBus().run_until_quiet()

    assert deliveries[0].report == {"context": "ordering", "handled": ["ordering:catalog.StockReserved"],
                          "duplicates": []}
    assert Order.objects.get(id=order_id).status != Order.Status.AWAITING_STOCK
    assert repair.retry_outcome(action).state == "handled"


def test_a_retry_that_fails_again_makes_a_new_dead_letter_the_history_points_to(
    stock_reserved_for_a_missing_order,
):
    _, letter = stock_reserved_for_a_missing_order
    repair.retry([letter], actor="alice")
    row = OutboxMessage.objects.get(redeliver_to="ordering")

    consume(row.envelope, context="ordering", last_attempt=True)  # the order is still missing

    outcome = repair.retry_outcome(letter.actions.get())
    again = DeadLetter.objects.exclude(pk=letter.pk).get()
    assert (outcome.state, outcome.dead_letter) == ("dead_again", again)
    assert again.status == DeadLetter.Status.OPEN and again.message_id == letter.message_id


def test_an_event_retried_for_one_subscriber_never_reaches_the_others():
    envelope = _published(PRICE_CHANGE)
    letter = _dead_letter(envelope, context="ordering")

    repair.retry([letter], actor="alice")
    deliveries = TestBus().run_until_quiet()

    assert [delivery.context for delivery in deliveries] == ["ordering"]
    assert not InboxMessage.objects.filter(consumer__startswith="basket:").exists()


def test_two_dead_letters_of_one_delivery_go_back_as_one_message():
    envelope = _published(PRICE_CHANGE)
    letters = [_dead_letter(envelope, context="ordering") for _ in range(2)]

    report = repair.retry(DeadLetter.objects.all(), actor="alice")

    assert sorted(d.pk for d in report.done) == sorted(d.pk for d in letters)
    assert OutboxMessage.objects.filter(redeliver_to="ordering").count() == 1
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {DeadLetter.Status.RETRIED}


@pytest.mark.parametrize("why, change", [
    ("retried already", lambda d: DeadLetter.objects.filter(pk=d.pk).update(status=DeadLetter.Status.RETRIED)),
    ("only the start of its body", lambda d: DeadLetter.objects.filter(pk=d.pk).update(body_truncated=True)),
    ("not a readable envelope", lambda d: DeadLetter.objects.filter(pk=d.pk).update(body={"base64": "gAQ="})),
    ("no longer handles", lambda d: DeadLetter.objects.filter(pk=d.pk).update(context="payment")),
    ("BUS_DEAD_LETTER_REPLAY_WINDOW", lambda d: DeadLetter.objects.filter(pk=d.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=400))),
])
def test_a_dead_letter_that_cannot_be_sent_again_is_refused_with_why(why, change):
    envelope = _published(PRICE_CHANGE)
    letter = _dead_letter(envelope, context="ordering")
    change(letter)

    report = repair.retry([letter], actor="alice")

    [(refused, reason)] = report.refused
    assert refused.pk == letter.pk and why in reason
    assert not OutboxMessage.objects.filter(redeliver_to__gt="").exists()
    assert not DeadLetterAction.objects.exists()


def test_a_dry_run_retry_changes_nothing(stock_reserved_for_a_missing_order):
    _, letter = stock_reserved_for_a_missing_order

    report = repair.retry([letter], actor="alice", dry_run=True)

    assert report.done == [letter]
    assert not OutboxMessage.objects.filter(redeliver_to__gt="").exists()
    assert DeadLetter.objects.get().status == DeadLetter.Status.OPEN


def test_a_discard_archives_with_its_note_and_sends_nothing(stock_reserved_for_a_missing_order):
    _, letter = stock_reserved_for_a_missing_order

    repair.discard([letter], actor="bob", note="order was never placed")

    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.DISCARDED
    assert letter.actions.get().note == "order was never placed"
    assert not OutboxMessage.objects.filter(redeliver_to__gt="").exists()
    # and a discarded letter is no longer retried
    assert "discarded already" in repair.retry([letter], actor="alice").refused[0][1]


def test_a_discard_needs_a_note(stock_reserved_for_a_missing_order):
    _, letter = stock_reserved_for_a_missing_order

    with pytest.raises(ValueError, match="note"):
        repair.discard([letter], actor="bob", note="  ")


def test_failures_are_grouped_by_error_and_consumer_with_counts_and_first_and_last_seen():
    envelope = _published(PRICE_CHANGE)
    same = [_dead_letter(envelope, context="ordering", consumer="o.h") for _ in range(3)]
    _dead_letter(envelope, context="basket", consumer="b.h")
    closed = _dead_letter(envelope, context="basket", consumer="b.h")
    repair.discard([closed], actor="bob", note="seen")

    groups = list(repair.failure_groups())

    assert [(g["context"], g["consumer"], g["exception_type"], g["count"]) for g in groups] == [
        ("ordering", "o.h", "RuntimeError", 3), ("basket", "b.h", "RuntimeError", 1),
    ]
    assert groups[0]["first_seen"] == same[0].created_at and groups[0]["last_seen"] == same[-1].created_at
    assert set(repair.group_members(groups[0])) == set(same)


def _run(*args) -> tuple[str, str]:
    import io

    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    call_command("dead_letters", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_lists_open_dead_letters_filtered_by_context():
    envelope = _published(PRICE_CHANGE)
    ordering = _dead_letter(envelope, context="ordering")
    basket = _dead_letter(envelope, context="basket")

    out, _ = _run("list", "--context", "ordering")

    assert str(ordering.id) in out and str(basket.id) not in out
    assert "1 of 1 dead letters" in out


def test_the_command_retries_by_id_and_a_dry_run_changes_nothing(stock_reserved_for_a_missing_order):
    _, letter = stock_reserved_for_a_missing_order

    out, _ = _run("retry", "--id", str(letter.message_id), "--dry-run")
    assert f"would retry {letter.id}" in out
    assert DeadLetter.objects.get().status == DeadLetter.Status.OPEN

    out, _ = _run("retry", "--id", str(letter.id), "--actor", "ops")
    assert f"retried {letter.id}" in out and "retried 1, refused 0" in out
    assert letter.actions.get().actor == "ops"
    assert OutboxMessage.objects.filter(redeliver_to="ordering").count() == 1


def test_the_command_discards_with_a_note_by_reason_and_since(stock_reserved_for_a_missing_order):
    _, letter = stock_reserved_for_a_missing_order

    out, _ = _run("discard", "--reason", "handler_failed", "--since", "1 00:00:00", "--note", "test order")

    assert "discarded 1" in out
    assert letter.actions.get().note == "test order"
    assert letter.actions.get().actor.startswith("cli:")


@pytest.mark.parametrize("args, error", [
    (("retry", "--id", "not-a-uuid"), "is not a UUID"),
    (("retry", "--since", "yesterday-ish"), "neither an ISO time nor a duration"),
    (("retry", "--context", "nowhere"), "no dead letter matches"),
    (("list", "--limit", "0"), "--limit must be at least 1"),
])
def test_the_command_refuses_bad_input_with_one_line(args, error):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match=error):
        _run(*args)


def test_the_command_fails_when_every_selected_dead_letter_is_refused(stock_reserved_for_a_missing_order):
    from django.core.management import CommandError

    _, letter = stock_reserved_for_a_missing_order
    DeadLetter.objects.filter(pk=letter.pk).update(body_truncated=True)

    with pytest.raises(CommandError, match="nothing was done"):
        _run("retry", "--id", str(letter.id))
