"""A conversation's timeline, assembled from what the bus records, for flows run on the in-memory bus."""

import datetime
import uuid
from decimal import Decimal

import pytest
from django_celery_results.models import TaskResult

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_change_price
from console.conversation import DeliveryState, StepState, conversation_of
from messaging.dead_letters import dead_letter_record
from messaging.models import DeadLetter, DeadLetterAction, InboxMessage, OutboxMessage
from messaging.task_message import delivery_id
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db

PAYMENT_HANDLER = "payment:payment.ProcessPayment"


def checkout(**deliver_options) -> uuid.UUID:
    """A basket of one mug checked out, its messages delivered; returns the order id."""
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    order_id = basket_checkout(customer_id="c1")
    TestBus().run_until_quiet(**deliver_options)
    return order_id


def payment_gives_up(order_id: uuid.UUID) -> DeadLetter:
    """The dead letter the consumer records when ProcessPayment fails its last attempt."""
    row = OutboxMessage.objects.get(correlation_id=order_id, message_type="payment.ProcessPayment")
    try:
        raise RuntimeError("card processor down")
    except RuntimeError as error:
        return dead_letter_record(
            reason=DeadLetter.Reason.HANDLER_FAILED, context="payment", consumer=PAYMENT_HANDLER,
            message_id=row.message_id, message_type=row.message_type, body=row.envelope, error=error, attempts=6,
        )


def test_a_checkout_lists_every_message_in_order_with_its_sender_receivers_and_state(catalog_product):
    order_id = checkout()

    conversation = conversation_of(order_id)

    assert [(s.number, s.message_type, s.source, [d.context for d in s.deliveries], s.state)
            for s in conversation.steps] == [
        (1, "ordering.PlaceOrder", "basket", ["ordering"], StepState.DONE),
        (2, "ordering.ExpireOrder", "basket", ["ordering"], StepState.SCHEDULED),
        (3, "ordering.OrderStarted", "ordering", ["basket"], StepState.DONE),
        (4, "catalog.ReserveStock", "ordering", ["catalog"], StepState.DONE),
        (5, "catalog.StockReserved", "catalog", ["ordering"], StepState.DONE),
        (6, "payment.ProcessPayment", "ordering", ["payment"], StepState.DONE),
        (7, "payment.PaymentSucceeded", "payment", ["ordering"], StepState.DONE),
        (8, "ordering.OrderPaid", "ordering", [], StepState.DONE),
    ]
    assert conversation.participants == ["basket", "ordering", "catalog", "payment"]


def test_each_message_names_the_step_that_caused_it(catalog_product):
    order_id = checkout()

    steps = conversation_of(order_id).steps

    assert [step.cause for step in steps] == [None, None, 1, 1, 4, 5, 6, 7]
    assert steps[2].causation_id == steps[0].message_id
    assert steps[2].since_cause == steps[2].written_at - steps[0].written_at
    assert steps[0].since_cause is None


def test_a_handled_step_says_when_each_context_handled_it_and_how_long_it_took(catalog_product):
    order_id = checkout()

    step = conversation_of(order_id).steps[0]

    (delivery,) = step.deliveries
    inbox = InboxMessage.objects.get(message_id=step.message_id)
    assert delivery.state == DeliveryState.HANDLED
    assert [(h.consumer, h.handled_at) for h in delivery.handlings] == [(inbox.consumer, inbox.handled_at)]
    assert delivery.latency == inbox.handled_at - step.published_at
    assert step.took == inbox.handled_at - step.written_at
    assert step.relay_delay is not None and step.since_start == datetime.timedelta(0)


def test_a_scheduled_message_is_pending_until_its_time(catalog_product):
    order_id = checkout()

    expire = conversation_of(order_id).steps[1]

    assert expire.pending and expire.state == StepState.SCHEDULED
    assert expire.scheduled_for == OutboxMessage.objects.get(message_id=expire.message_id).available_at
    assert expire.published_at is None
    assert [(d.context, d.state) for d in expire.deliveries] == [("ordering", DeliveryState.PENDING)]


def test_a_published_message_no_context_has_handled_yet_is_in_flight(catalog_product):
    order_id = checkout(withholding=("catalog.ReserveStock",))

    conversation = conversation_of(order_id)

    reserve = next(s for s in conversation.steps if s.message_type == "catalog.ReserveStock")
    assert reserve.state == StepState.IN_FLIGHT and reserve.published_at is not None
    assert [(d.context, d.state, d.handled_at) for d in reserve.deliveries] == [("catalog", DeliveryState.PENDING, None)]
    assert [s.message_type for s in conversation.unfinished] == ["ordering.ExpireOrder", "catalog.ReserveStock"]


def test_a_dead_lettered_step_shows_its_consumer_reason_error_and_retries(catalog_product):
    order_id = checkout(withholding=("payment.ProcessPayment",))
    letter = payment_gives_up(order_id)

    conversation = conversation_of(order_id)

    (payment,) = conversation.failed
    assert payment.message_type == "payment.ProcessPayment" and payment.state == StepState.FAILED
    (delivery,) = payment.deliveries
    assert delivery.state == DeliveryState.DEAD_LETTERED and delivery.automatic_retries == 5
    (failure,) = delivery.failures
    assert (failure.dead_letter_id, failure.consumer, failure.reason, failure.error, failure.status) == (
        letter.id, PAYMENT_HANDLER, "Handler failed after all retries", "RuntimeError: card processor down", "open")
    assert [(h.consumer, h.handled_at) for h in delivery.handlings] == [(PAYMENT_HANDLER, None)]


def test_a_retried_dead_letter_shows_its_repair_then_the_handling_it_led_to(catalog_product, admin_user):
    order_id = checkout(withholding=("payment.ProcessPayment",))
    letter = payment_gives_up(order_id)
    original = OutboxMessage.objects.get(message_id=letter.message_id)
    # What the repair service writes: the same message, again, for the context that failed.
    retry = OutboxMessage.objects.create(
        message_id=original.message_id, kind=original.kind, message_type=original.message_type,
        correlation_id=original.correlation_id, envelope=original.envelope, redeliver_to="payment",
    )
    DeadLetterAction.objects.create(dead_letter=letter, action="retried", user=admin_user, actor="admin",
                                    outbox_message=retry)
    DeadLetter.objects.filter(id=letter.id).update(status=DeadLetter.Status.RETRIED)

    retrying = next(s for s in conversation_of(order_id).steps if s.message_id == letter.message_id)
    TestBus().run_until_quiet()
    handled = next(s for s in conversation_of(order_id).steps if s.message_id == letter.message_id)

    assert (retrying.state, retrying.deliveries[0].state) == (StepState.IN_FLIGHT, DeliveryState.RETRYING)
    assert [r.outbox_id for r in retrying.deliveries[0].redeliveries] == [retry.id]
    assert [(r.action, r.actor) for r in retrying.deliveries[0].failures[0].repairs] == [("retried", "admin")]
    assert (handled.state, handled.deliveries[0].state) == (StepState.DONE, DeliveryState.HANDLED)
    assert handled.outbox_id == original.id  # the retry is not a message of its own
    assert "operator" in conversation_of(order_id).participants


def test_each_subscriber_of_an_event_shows_its_own_task_result(catalog_product):
    event = product_change_price(sku="MUG-1", new_price=Decimal("11.00"))
    TestBus().run_until_quiet()
    row = OutboxMessage.objects.get(message_type="catalog.ProductPriceChanged")
    for context in ("basket", "ordering"):
        TaskResult.objects.create(task_id=delivery_id(row.message_id, context), task_name=row.message_type,
                                  status="SUCCESS", worker=f"{context}@host")

    (step,) = conversation_of(row.correlation_id).steps

    assert event.sku == "MUG-1"
    assert [(d.context, d.state, d.task.status, d.task.worker) for d in step.deliveries] == [
        ("basket", DeliveryState.HANDLED, "SUCCESS", "basket@host"),
        ("ordering", DeliveryState.HANDLED, "SUCCESS", "ordering@host"),
    ]
    assert all(d.task is None for d in conversation_of(row.correlation_id, with_task_results=False).steps[0].deliveries)


def test_a_message_whose_outbox_row_was_purged_is_rebuilt_from_its_inbox_rows_and_dead_letters(catalog_product):
    order_id = checkout(withholding=("payment.ProcessPayment",))
    letter = payment_gives_up(order_id)
    place_order = OutboxMessage.objects.get(message_type="ordering.PlaceOrder")
    OutboxMessage.objects.filter(message_id__in=[place_order.message_id, letter.message_id]).delete()

    steps = {step.message_type: step for step in conversation_of(order_id).steps}

    purged = steps["ordering.PlaceOrder"]
    assert (purged.outbox_id, purged.state, purged.deliveries[0].state) == (None, StepState.DONE, DeliveryState.HANDLED)
    failed = steps["payment.ProcessPayment"]
    assert (failed.outbox_id, failed.source, failed.state) == (None, "ordering", StepState.FAILED)
    assert failed.cause == steps["catalog.StockReserved"].number
    # Placed by when it was first handled: before what it caused, which still points to it.
    assert steps["ordering.OrderStarted"].cause == purged.number < steps["ordering.OrderStarted"].number


def test_the_timeline_costs_one_query_per_table_whatever_its_length(catalog_product, django_assert_num_queries):
    order_id = checkout(withholding=("payment.ProcessPayment",))
    payment_gives_up(order_id)

    # outbox, inbox, dead letters, their repairs, task results
    with django_assert_num_queries(5):
        conversation = conversation_of(order_id)

    assert len(conversation.steps) == 6


def test_an_id_nobody_used_is_an_empty_conversation(db):
    conversation = conversation_of(uuid.uuid4())

    assert (conversation.steps, conversation.participants, conversation.duration) == ([], [], None)


def test_outbox_rows_carry_their_sender_and_cause_as_columns(catalog_product):
    order_id = checkout()

    rows = {row.message_type: row for row in OutboxMessage.objects.filter(correlation_id=order_id)}

    assert (rows["ordering.PlaceOrder"].source, rows["ordering.PlaceOrder"].causation_id) == ("basket", None)
    assert rows["catalog.ReserveStock"].source == "ordering"
    assert rows["catalog.ReserveStock"].causation_id == rows["ordering.PlaceOrder"].message_id
    assert all(row.envelope.get("causationid") == (str(row.causation_id) if row.causation_id else None)
               and row.envelope["source"] == row.source for row in rows.values())
