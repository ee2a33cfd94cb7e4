"""Nothing disappears silently: what a worker cannot read, and what RabbitMQ
gives up on, ends up as a dead letter in the admin's table."""

import base64
import pickle
import uuid

import pytest
from celery import current_app
from django.conf import settings
from django.db import transaction
from django_celery_results.models import TaskResult

from messaging.brokers.base import publish_envelope
from messaging.models import DeadLetter, InboxMessage
from apps.catalog.messages import StockReserved
from messaging.outbox import nudge_relay
from tests.senders import publish
from messaging.task_message import delivery_id
from messaging.topology import DEFAULT_EXCHANGE, Topology
from tests.integration.rabbitmq import queue_depth, returned_past_the_delivery_limit
from tests.polling import wait_for

pytestmark = pytest.mark.integration

BASKET_PRICES = "basket.events.catalog.ProductPriceChanged"


def _envelope(message_type: str = "catalog.ProductPriceChanged") -> dict:
    message_id = str(uuid.uuid4())
    return {
        "id": message_id, "type": message_type, "kind": "event", "version": 1, "source": "catalog",
        "time": "2026-01-01T00:00:00Z", "correlationid": message_id,
        "specversion": "1.0", "datacontenttype": "application/json",
        "data": {"sku": "X", "old_price": "1.00", "new_price": "2.00", "price_version": 1},
    }


def _dead_letter(message_id: str) -> DeadLetter | None:
    return DeadLetter.objects.filter(message_id=message_id).first()


def test_an_unknown_task_name_is_dead_lettered_and_never_run(bus):
    envelope = _envelope("catalog.ProductVanished")
    with current_app.producer_or_acquire() as producer:
        publish_envelope(producer, envelope, exchange=DEFAULT_EXCHANGE, routing_key=BASKET_PRICES)

    letter = wait_for(lambda: _dead_letter(envelope["id"]), message="the dead letter")

    assert (letter.reason, letter.context) == (DeadLetter.Reason.UNREADABLE, "basket")
    assert "no task named 'catalog.ProductVanished'" in letter.error
    assert letter.body == envelope


def test_a_pickled_body_is_dead_lettered_and_never_unpickled(bus):
    message_id = str(uuid.uuid4())
    payload = pickle.dumps(((), {"envelope": _envelope()}, {}))
    with current_app.producer_or_acquire() as producer:
        producer.publish(
            payload, content_type="application/x-python-serialize",
            content_encoding="binary", exchange=DEFAULT_EXCHANGE, routing_key=BASKET_PRICES,
            headers={"id": message_id, "task": "catalog.ProductPriceChanged", "lang": "py"},
        )

    letter = wait_for(lambda: _dead_letter(message_id), message="the dead letter")

    assert letter.reason == DeadLetter.Reason.UNREADABLE
    assert "Refusing to deserialize untrusted content of type pickle" in letter.error
    assert base64.b64decode(letter.body["base64"]) == payload  # kept as bytes, never unpickled
    assert letter.headers["content_type"] == "application/x-python-serialize"
    assert not InboxMessage.objects.filter(message_id=message_id).exists()


def test_a_message_over_the_delivery_limit_is_dead_lettered_by_rabbitmq_and_collected(bus):
    envelope = _envelope()
    returned_past_the_delivery_limit(envelope, "poisontest")

    with transaction.atomic():
        nudge_relay()  # the relay collects dead letters after each round of publishing
    letter = wait_for(lambda: _dead_letter(envelope["id"]), message="the relay to collect the dead letter")

    assert (letter.reason, letter.context) == (DeadLetter.Reason.BROKER, "poisontest")
    assert "from poisontest.commands (delivery_limit)" in letter.error
    assert letter.attempts == settings.BUS_DELIVERY_LIMIT + 1
    assert letter.body == envelope
    wait_for(lambda: queue_depth("dead-letters") == 0, timeout=10, message="the relay to ack it")
    # Celery reports no failure for a task whose worker died holding it: the relay does.
    failed = wait_for(lambda: TaskResult.objects.filter(task_id=delivery_id(envelope["id"], "poisontest")).first(),
                      message="the relay to store the delivery's failure")
    assert failed.status == "FAILURE"
    assert "DeadLettered" in failed.result and "broker" in failed.result and str(letter.id) in failed.result


def test_a_task_message_without_an_id_is_dead_lettered_and_the_worker_lives(bus):
    envelope = _envelope()
    with current_app.producer_or_acquire() as producer:
        producer.publish(
            [[], {"envelope": envelope}, {}], serializer="json", exchange=DEFAULT_EXCHANGE,
            routing_key=BASKET_PRICES, headers={"task": "catalog.ProductPriceChanged", "lang": "py"},
        )

    # No id header, so the row is found by the envelope's id kept in its body.
    letter = wait_for(lambda: DeadLetter.objects.filter(body__id=envelope["id"]).first(), message="the dead letter")

    assert letter.reason == DeadLetter.Reason.UNREADABLE
    assert letter.error == "task headers the bus does not send: id: Field required"
    assert letter.body == envelope
    assert not InboxMessage.objects.filter(message_id=envelope["id"]).exists()
    assert bus["worker-basket"].poll() is None


def test_a_task_message_whose_body_is_not_args_kwargs_embed_is_dead_lettered(bus):
    message_id = str(uuid.uuid4())
    with current_app.producer_or_acquire() as producer:
        producer.publish(
            {"envelope": _envelope()}, serializer="json", exchange=DEFAULT_EXCHANGE, routing_key=BASKET_PRICES,
            headers={"id": message_id, "task": "catalog.ProductPriceChanged", "lang": "py"},
        )

    letter = wait_for(lambda: _dead_letter(message_id), message="the dead letter")

    assert letter.error == "task message body is not [args, kwargs, embed]"
    assert bus["worker-basket"].poll() is None


def test_an_event_that_says_it_is_a_command_is_dead_lettered_at_once(bus):
    # Retried as a command it would have gone to basket.commands, which does not exist.
    envelope = {**_envelope(), "kind": "command"}
    with current_app.producer_or_acquire() as producer:
        publish_envelope(producer, envelope, exchange=DEFAULT_EXCHANGE, routing_key=BASKET_PRICES)

    letter = wait_for(lambda: _dead_letter(envelope["id"]), message="the dead letter")

    assert (letter.reason, letter.context) == (DeadLetter.Reason.INVALID_ENVELOPE, "basket")
    assert "kind 'command', but catalog.ProductPriceChanged is an event" in letter.error
    assert letter.attempts == 1


def test_a_retry_with_no_queue_to_wait_in_becomes_a_dead_letter_not_a_loss(bus, settings):
    # The holding queue of the workers' first retry is gone: RabbitMQ returns the retry.
    settings.BUS_RETRY_BACKOFF = float(bus.env["BUS_RETRY_BACKOFF"])
    settings.BUS_RETRY_BACKOFF_MAX = float(bus.env["BUS_RETRY_BACKOFF_MAX"])
    first_wait = next(q for q in Topology().queues() if q.name.startswith("retry."))
    with current_app.connection_for_write() as connection:
        first_wait(connection.default_channel).delete()
    try:
        with transaction.atomic():
            # Ordering has no such order: its handler fails, and the message is retried.
            envelope = publish(StockReserved(order_id=uuid.uuid4()))
        wait_for(lambda: queue_depth("dead-letters") == 1, message="the worker to reject the message it could not retry")
        with transaction.atomic():
            nudge_relay()  # the relay collects dead letters after each round of publishing
        letter = wait_for(lambda: _dead_letter(envelope.id), message="the relay to collect the rejected message")
    finally:
        with current_app.connection_for_write() as connection:
            Topology().declare(connection.default_channel)

    assert (letter.reason, letter.context) == (DeadLetter.Reason.BROKER, "ordering")
    assert "ordering.events.catalog.StockReserved (rejected)" in letter.error
    assert letter.body["id"] == str(envelope.id)
