"""The worker's consumer hands Celery each delivery under its delivery's task id, and
a delivery Celery still fails on becomes a dead letter under the message's own id."""

import json
import uuid

import pytest
from celery import current_app
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.message import Message

from messaging.brokers.base import publish_envelope
from messaging.models import DeadLetter
from messaging.task_message import delivery_id
from messaging.worker import Consumer, intake_policy

pytestmark = pytest.mark.django_db


class _RecordingProducer:
    def publish(self, body, **kwargs):
        self.body, self.kwargs = body, kwargs


def _place_order_delivery() -> tuple[Message, str]:
    message_id = str(uuid.uuid4())
    envelope = {"id": message_id, "type": "ordering.PlaceOrder", "correlationid": message_id, "data": {}}
    producer = _RecordingProducer()
    publish_envelope(producer, envelope, exchange="commands", routing_key="ordering.PlaceOrder")
    message = Message(body=json.dumps(producer.body).encode(), headers=producer.kwargs["headers"],
                      content_type="application/json", content_encoding="utf-8", accept={"application/json"},
                      delivery_info={})
    message.ack = lambda: None  # the broker's side of an acknowledgement
    return message, message_id


def _ordering_consumer(monkeypatch, settings, celery_takes):
    """The bus's consumer around a stand-in for Celery's own task handler."""
    settings.BUS_CONTEXT = "ordering"
    monkeypatch.setattr(CeleryConsumer, "create_task_handler", lambda self, promise=None: celery_takes)
    # The worker drops a stale connection before recording; here it is the test's transaction.
    monkeypatch.setattr("messaging.worker.close_old_connections", lambda: None)
    consumer = Consumer.__new__(Consumer)  # only what taking a message needs, no broker connection
    consumer.context, consumer.intake = "ordering", intake_policy("ordering")
    consumer.app, consumer.event_dispatcher = current_app, None
    consumer.connection_errors = consumer.channel_errors = ()
    return consumer.create_task_handler()


def test_celery_takes_a_delivery_under_its_delivery_id_and_the_message_keeps_its_own(monkeypatch, settings):
    seen = []
    on_task_received = _ordering_consumer(monkeypatch, settings, lambda message: seen.append(dict(message.headers)))
    message, message_id = _place_order_delivery()

    on_task_received(message)

    assert seen[0]["id"] == delivery_id(message_id, "ordering")
    assert message.headers["id"] == message_id


def test_a_delivery_celery_fails_on_is_dead_lettered_under_the_message_id(monkeypatch, settings):
    def celery_fails(message):
        raise TypeError("a header Celery could not read")

    on_task_received = _ordering_consumer(monkeypatch, settings, celery_fails)
    message, message_id = _place_order_delivery()

    on_task_received(message)

    letter = DeadLetter.objects.get()
    assert str(letter.message_id) == message_id
    assert "could not take it: TypeError" in letter.error
