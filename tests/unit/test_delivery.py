"""Consuming: each handler's effects once per message; hopeless messages become dead letters."""

import types
import uuid
from decimal import Decimal

import pytest
from celery import current_app

from apps.basket.models import BasketLine
from apps.basket.services import basket_add_item
from apps.catalog.messages import ProductPriceChanged
from messaging.delivery import HandlerFailedError, consume
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from tests.senders import publish
from messaging.topology import Topology
from tests.brokers import on_broker

pytestmark = pytest.mark.django_db


@pytest.fixture
def price_changed():
    publish(ProductPriceChanged(sku="MUG-1", old_price=Decimal("10.00"), new_price=Decimal("12.00"), price_version=1, currency="EUR"))
    return OutboxMessage.objects.get().envelope


def test_redelivered_event_changes_basket_once(price_changed):
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))

    first = consume(price_changed, context="basket")
    second = consume(price_changed, context="basket")

    assert first["handled"] == ["basket:catalog.ProductPriceChanged"]
    assert second["handled"] == [] and second["duplicates"] == ["basket:catalog.ProductPriceChanged"]
    line = BasketLine.objects.get()
    assert (line.unit_price, line.previous_unit_price) == (Decimal("12.00"), Decimal("10.00"))
    assert InboxMessage.objects.filter(message_id=price_changed["id"]).count() == 1


def test_dedup_never_crosses_consumers(price_changed):
    consume(price_changed, context="basket")
    report = consume(price_changed, context="ordering")

    assert report["handled"] == ["ordering:catalog.ProductPriceChanged"]
    assert set(InboxMessage.objects.values_list("consumer", flat=True)) == {
        "basket:catalog.ProductPriceChanged",
        "ordering:catalog.ProductPriceChanged",
    }


def test_a_failing_handler_rolls_back_its_effects_and_its_inbox_row(price_changed, monkeypatch):
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))

    def reprice_then_fail(**kwargs):
        BasketLine.objects.update(unit_price=Decimal("0.01"))
        raise ConnectionError("payment gateway down")

    monkeypatch.setattr("apps.basket.handlers.basket_reprice", reprice_then_fail)
    with pytest.raises(HandlerFailedError) as failure:
        consume(price_changed, context="basket")

    assert isinstance(failure.value.__cause__, ConnectionError)
    assert BasketLine.objects.get().unit_price == Decimal("10.00")
    assert not InboxMessage.objects.exists()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not an envelope", DeadLetter.Reason.INVALID_ENVELOPE),
        ({"id": "not-a-uuid", "type": "catalog.ProductPriceChanged"}, DeadLetter.Reason.INVALID_ENVELOPE),
    ],
)
def test_an_invalid_envelope_is_dead_lettered_without_running_anything(body, reason):
    report = consume(body, context="basket")

    assert report["dead_lettered"] == reason
    assert DeadLetter.objects.get().reason == reason
    assert not InboxMessage.objects.exists()


def test_an_unknown_type_is_dead_lettered(price_changed):
    unknown = {**price_changed, "type": "catalog.ProductVanished"}

    consume(unknown, context="basket")

    letter = DeadLetter.objects.get()
    assert letter.reason == DeadLetter.Reason.UNKNOWN_TYPE
    assert str(letter.message_id) == price_changed["id"]
    assert letter.body == unknown


def test_data_that_breaks_the_contract_is_dead_lettered_at_once(price_changed):
    broken = {**price_changed, "data": {"sku": "MUG-1", "new_price": "cheap"}}

    consume(broken, context="basket")

    letter = DeadLetter.objects.get()
    assert letter.reason == DeadLetter.Reason.INVALID_DATA
    assert "new_price" in letter.error
    assert not InboxMessage.objects.exists()


def test_a_message_for_a_context_that_does_not_handle_it_is_dead_lettered(price_changed):
    consume(price_changed, context="payment")

    assert DeadLetter.objects.get().reason == DeadLetter.Reason.UNKNOWN_TYPE


@pytest.mark.parametrize(("lie", "why"), [
    ({"kind": "command"}, "kind 'command', but catalog.ProductPriceChanged is an event"),
    ({"source": "ordering"}, "is an event of 'catalog'"),
])
def test_an_envelope_that_disagrees_with_the_registry_is_dead_lettered_at_once(price_changed, lie, why):
    liar = {**price_changed, **lie}

    report = consume(liar, context="basket")

    letter = DeadLetter.objects.get()
    assert report["dead_lettered"] == letter.reason == DeadLetter.Reason.INVALID_ENVELOPE
    assert why in letter.error
    assert not InboxMessage.objects.exists()


def test_a_command_from_a_source_no_context_has_is_dead_lettered():
    from apps.catalog.messages import ReleaseStock
    from tests.senders import send

    command = {**send(ReleaseStock(order_id=uuid.uuid4())).to_json_dict(), "source": "mallory"}

    consume(command, context="catalog")

    assert "source 'mallory' is not a context" in DeadLetter.objects.get().error


def test_retry_delays_grow_exponentially_up_to_the_maximum(settings):
    settings.BUS_RETRY_BACKOFF, settings.BUS_RETRY_BACKOFF_MAX = 2.0, 60.0

    delays = [Topology().retry_route("basket.commands", retries).delay for retries in range(8)]

    assert 1.0 <= delays[0] <= 2.0
    assert 8.0 <= delays[3] <= 16.0
    assert all(30.0 <= delay <= 60.0 for delay in delays[5:])


def test_on_rabbitmq_a_retry_waits_in_the_holding_queue_of_its_delay(settings):
    on_broker(settings, "rabbitmq")
    settings.BUS_RETRY_BACKOFF, settings.BUS_RETRY_BACKOFF_MAX, settings.BUS_MAX_RETRIES = 2.0, 60.0, 8

    retry = Topology().retry_route("basket.events.catalog.ProductPriceChanged", 3)

    assert retry.route.exchange.name == "retry.basket.16000ms"
    assert retry.route.routing_key == "basket.events.catalog.ProductPriceChanged"
    assert 8.0 <= retry.expiration <= 16.0 and retry.countdown is None
    # Each context its own holding queues: one per step of the schedule.
    holding_queues = [q.name for q in Topology().queues() if q.name.startswith("retry.basket.")]
    assert holding_queues == [f"retry.basket.{ms}ms" for ms in (2000, 4000, 8000, 16000, 32000, 60000)]
    holding = {q.name: q for q in Topology().queues()}["retry.basket.16000ms"]
    # A quorum queue, replicated on a cluster's nodes like every other; what expires goes back
    # through basket's return exchange, kept until the queue it returns to has it.
    assert holding.queue_arguments == {
        "x-queue-type": "quorum", "x-message-ttl": 16000, "x-dead-letter-exchange": "retried.basket",
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
    }
    # Which only basket's queues are bound to, each by its own name.
    returns = {(b.exchange.name, b.routing_key) for q in Topology().queues() for b in q.bindings
               if b.exchange.name.startswith("retried.")}
    assert ("retried.basket", "basket.events.catalog.ProductPriceChanged") in returns
    assert all(key.startswith(exchange.removeprefix("retried.") + ".") for exchange, key in returns)


def test_a_message_id_is_written_once_except_by_a_dead_letters_retry():
    from django.db import IntegrityError, transaction

    from messaging.contracts import Envelope
    from messaging.models import OutboxMessage
    from messaging.outbox import redeliver

    envelope = publish(ProductPriceChanged(sku="A", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1, currency="EUR"))
    row = OutboxMessage.objects.get(message_id=envelope.id)

    # The same id again as an ordinary message: the database refuses it (the relay
    # would publish it to every subscriber twice).
    with pytest.raises(IntegrityError), transaction.atomic():
        OutboxMessage.objects.create(message_id=envelope.id, kind=row.kind, message_type=row.message_type,
                                     correlation_id=row.correlation_id, envelope=row.envelope)
    # A retry of a dead letter carries it again, for one context's queue, as often as it is retried.
    redeliver(Envelope.model_validate(row.envelope), context="ordering")
    redeliver(Envelope.model_validate(row.envelope), context="ordering")
    assert OutboxMessage.objects.filter(message_id=envelope.id).count() == 3


def _run_price_changed_task(*args, retries: int = 0, **kwargs):
    """Run the Celery task a worker runs for a price change, on attempt ``retries + 1``: the
    registered task itself, under the request Celery gives it (``Task.push_request``)."""
    task = current_app.tasks["catalog.ProductPriceChanged"]
    task.push_request(id="task-id", retries=retries, delivery_info={
        "exchange": "events.catalog.ProductPriceChanged", "routing_key": "catalog.ProductPriceChanged",
    })
    try:
        return task.run(*args, **kwargs)
    finally:
        task.pop_request()


@pytest.fixture
def failing_basket_handler(monkeypatch, settings):
    settings.BUS_CONTEXT = "basket"

    def fail(**kwargs):
        raise ConnectionError("database briefly away")

    monkeypatch.setattr("apps.basket.handlers.basket_reprice", fail)
    published = []
    monkeypatch.setattr("messaging.tasks.publish_confirmed", published.extend)
    return published


@pytest.mark.parametrize(("broker", "via"), [("embedded", ""), ("redis", ""), ("rabbitmq", "retry.basket.400ms")])
def test_a_failed_event_is_retried_on_the_subscribers_own_queue_only(
    price_changed, failing_basket_handler, settings, broker, via
):
    from celery.exceptions import Retry


    on_broker(settings, broker)
    settings.BUS_RETRY_BACKOFF, settings.BUS_RETRY_BACKOFF_MAX = 0.1, 0.5
    with pytest.raises(Retry):
        _run_price_changed_task(envelope=price_changed, retries=2)

    [retry] = failing_basket_handler
    assert retry.envelope == price_changed
    # Straight to basket's queue (directly, or after waiting in a retry queue),
    # never through the fanout exchange: ordering does not get it again.
    assert getattr(retry.exchange, "name", retry.exchange) == via
    assert retry.routing_key == "basket.events.catalog.ProductPriceChanged"
    assert retry.retries == 3 and (retry.expiration or retry.countdown) > 0
    # It waits on the broker (RabbitMQ) or in the worker (a countdown), never both.
    assert (retry.expiration is None) == (via == "") and (retry.countdown is None) == (via != "")
    assert not DeadLetter.objects.exists()


def test_after_the_last_retry_the_message_becomes_a_dead_letter(price_changed, failing_basket_handler, settings):
    from messaging.delivery import DeadLettered

    # The task fails (Flower and the task results show it), naming the dead letter.
    with pytest.raises(DeadLettered, match=DeadLetter.Reason.HANDLER_FAILED) as failure:
        _run_price_changed_task(envelope=price_changed, retries=settings.BUS_MAX_RETRIES)

    assert failing_basket_handler == []
    letter = DeadLetter.objects.get()
    assert str(letter.id) in str(failure.value) and "database briefly away" in str(failure.value)
    assert letter.exception_type == "ConnectionError"
    assert letter.correlation_id is not None and str(letter.correlation_id) == price_changed["correlationid"]
    assert (letter.context, letter.consumer) == ("basket", "basket:catalog.ProductPriceChanged")
    assert letter.attempts == settings.BUS_MAX_RETRIES + 1
    assert "ConnectionError: database briefly away" in letter.error and "Traceback" in letter.traceback
    assert letter.headers["delivery_info"]["exchange"] == "events.catalog.ProductPriceChanged"


def test_a_task_message_without_an_envelope_is_dead_lettered(settings):
    from messaging.delivery import DeadLettered

    settings.BUS_CONTEXT = "basket"
    with pytest.raises(DeadLettered, match=DeadLetter.Reason.INVALID_ENVELOPE):
        _run_price_changed_task("positional", "arguments")

    assert DeadLetter.objects.get().reason == DeadLetter.Reason.INVALID_ENVELOPE


def test_a_task_message_with_no_arguments_at_all_is_dead_lettered(settings):
    from messaging.delivery import DeadLettered

    settings.BUS_CONTEXT = "basket"
    with pytest.raises(DeadLettered, match=DeadLetter.Reason.INVALID_ENVELOPE):
        _run_price_changed_task()

    assert DeadLetter.objects.get().body == {"args": [], "kwargs": {}}


def _lost_connection() -> Exception:
    import psycopg
    from django.db import OperationalError

    try:
        raise OperationalError("connection failed") from psycopg.OperationalError("connection failed")
    except OperationalError as error:
        return error


@pytest.fixture
def database_away_for(monkeypatch, settings, failing_basket_handler):
    """The basket handler meets a lost connection for the given number of attempts, then works."""
    settings.BUS_CONTEXT, settings.BUS_DATABASE_WAIT = "basket", 10.0
    slept = []
    # A clock of its own: each pause passes at once.
    clock = types.SimpleNamespace(monotonic=lambda: sum(slept), sleep=slept.append)
    monkeypatch.setattr("messaging.tasks.time", clock)
    def away_for(attempts: int):
        from apps.basket.services import basket_reprice

        calls = []

        def reprice(**kwargs):
            calls.append(kwargs)
            if len(calls) <= attempts:
                raise _lost_connection()
            return basket_reprice(**kwargs)

        monkeypatch.setattr("apps.basket.handlers.basket_reprice", reprice)
        return slept

    return away_for


def test_a_message_waits_for_a_database_that_comes_back_and_costs_no_attempt(
    price_changed, database_away_for, failing_basket_handler, settings
):

    slept = database_away_for(3)

    report = _run_price_changed_task(envelope=price_changed, retries=settings.BUS_MAX_RETRIES)

    # Handled by this very delivery, even on its last allowed attempt: no retry, no dead letter.
    assert report["handled"] == ["basket:catalog.ProductPriceChanged"]
    assert failing_basket_handler == [] and not DeadLetter.objects.exists()
    assert slept == [0.5, 1.0, 2.0]


def test_a_database_still_away_after_the_wait_sends_the_message_back_uncounted(
    price_changed, database_away_for, failing_basket_handler, settings
):
    from celery.exceptions import Ignore


    on_broker(settings, "rabbitmq")
    slept = database_away_for(1000)

    with pytest.raises(Ignore):
        _run_price_changed_task(envelope=price_changed, retries=settings.BUS_MAX_RETRIES)

    # It waited about BUS_DATABASE_WAIT, then went to basket's retry queue with the
    # attempt count it came with: a lost connection never brings it nearer a dead letter.
    assert 5.0 <= sum(slept) <= settings.BUS_DATABASE_WAIT
    [retry] = failing_basket_handler
    assert retry.retries == settings.BUS_MAX_RETRIES and retry.envelope == price_changed
    assert retry.routing_key == "basket.events.catalog.ProductPriceChanged"
    assert retry.exchange.name.startswith("retry.")
    assert not DeadLetter.objects.exists()


def test_a_failing_statement_is_an_ordinary_counted_failure(price_changed, failing_basket_handler, monkeypatch):
    import psycopg
    from celery.exceptions import Retry
    from django.db import OperationalError


    def deadlock(**kwargs):
        raise OperationalError("deadlock detected") from psycopg.errors.DeadlockDetected("deadlock detected")

    monkeypatch.setattr("apps.basket.handlers.basket_reprice", deadlock)
    with pytest.raises(Retry):
        _run_price_changed_task(envelope=price_changed, retries=1)

    [retry] = failing_basket_handler
    assert retry.retries == 2


def test_an_unreadable_message_meeting_a_database_still_away_goes_to_the_brokers_dead_letter_queue(
    database_away_for, monkeypatch, settings
):
    from celery.exceptions import Reject


    database_away_for(0)

    def record_nothing(**kwargs):
        raise _lost_connection()

    monkeypatch.setattr("messaging.delivery.dead_letter_record", record_nothing)
    # A dead letter whatever happens: RabbitMQ keeps it until the relay can record it.
    with pytest.raises(Reject) as rejected:
        _run_price_changed_task("positional", "arguments")

    assert rejected.value.requeue is False
