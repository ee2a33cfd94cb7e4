"""An outside service reads the platform's events from RabbitMQ without Celery:
a queue of its own bound to the event's fanout exchange, the JSON body decoded,
the envelope at ``body[1]["envelope"]`` read as a CloudEvent."""

import json
import uuid
from decimal import Decimal

import pytest
from celery import current_app
from cloudevents.core.formats.json import JSONFormat
from django_celery_results.models import TaskResult
from kombu import Queue

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_create
from messaging.task_message import delivery_id
from messaging.models import OutboxMessage
from messaging.topology import Topology
from tests.polling import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def outside_queue():
    """A plain queue, as a non-Celery service would declare it, bound to OrderStarted's fanout exchange."""
    with current_app.connection_for_write() as connection:
        queue = Queue(f"outside-{uuid.uuid4().hex[:8]}", Topology().event_exchange("ordering.OrderStarted"),
                      exclusive=True)(connection.default_channel)
        queue.declare()
        yield queue


def test_an_outside_consumer_reads_a_caused_event_as_a_cloudevent_with_the_conversation_as_correlation_id(
        bus, outside_queue):
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    product_create(sku=sku, name="Mug", price=Decimal("10.00"), stock=5)
    basket_add_item(customer_id=f"c-{sku}", sku=sku, quantity=1, unit_price=Decimal("10.00"))

    basket_checkout(customer_id=f"c-{sku}")

    message = wait_for(lambda: outside_queue.get(no_ack=True), message="OrderStarted on the outside queue")
    place_order = OutboxMessage.objects.get(message_type="ordering.PlaceOrder")  # began the conversation
    _args, kwargs, _embed = json.loads(message.body)  # a Celery task message: [args, kwargs, embed]
    event = JSONFormat().read(None, json.dumps(kwargs["envelope"]))
    assert event.get_type() == "ordering.OrderStarted"
    assert event.get_source() == "ordering"
    assert event.get_specversion() == "1.0"
    assert event.get_time() is not None
    assert event.get_extension("correlationid") == str(place_order.correlation_id)
    assert event.get_extension("causationid") == str(place_order.message_id)
    assert event.get_data()["customer_id"] == f"c-{sku}"
    # The AMQP property carries the conversation; the id header is the message id, which the
    # worker makes a task id per receiving context (messaging.task_message.delivery_id).
    assert message.properties["correlation_id"] == str(place_order.correlation_id) != event.get_id()
    assert message.headers["id"] == event.get_id()
    wait_for(lambda: TaskResult.objects.filter(task_id=delivery_id(event.get_id(), "basket"), status="SUCCESS").exists(),
             message="basket's OrderStarted task to succeed, its result stored under its delivery id")
