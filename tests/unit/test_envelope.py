"""The envelope is a CloudEvent: any CloudEvents SDK reads it, and the AMQP
correlation-id property names the conversation it belongs to."""

import datetime
import json
import uuid
from decimal import Decimal

import pytest
from celery import current_app
from cloudevents.core.formats.json import JSONFormat
from kombu import Connection, Exchange, Queue

from apps.catalog.messages import ProductPriceChanged
from messaging import causation
from messaging.brokers.base import publish_envelope
from messaging.contracts import Envelope
from messaging.models import OutboxMessage
from tests.senders import publish

pytestmark = pytest.mark.django_db


def _price_changed() -> ProductPriceChanged:
    return ProductPriceChanged(sku="MUG-1", old_price=Decimal("1.00"), new_price=Decimal("2.00"), price_version=1, currency="EUR")


def _as_cloudevent(envelope: dict):
    """What a non-Python consumer does: read the JSON event format, attribute names validated."""
    return JSONFormat().read(None, json.dumps(envelope))


def test_an_envelope_caused_by_another_parses_as_a_cloudevent_with_its_extensions():
    cause = publish(_price_changed())
    with causation.handling(cause, "catalog"):
        effect = publish(_price_changed())
    stored = OutboxMessage.objects.get(message_id=effect.id).envelope

    event = _as_cloudevent(stored)

    assert event.get_id() == str(effect.id)
    assert event.get_type() == "catalog.ProductPriceChanged"
    assert event.get_source() == "catalog"
    assert event.get_specversion() == "1.0"
    assert event.get_time() == effect.time and event.get_time().tzinfo is not None
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("correlationid") == str(cause.id)
    assert event.get_extension("causationid") == str(cause.id)
    assert (event.get_extension("kind"), event.get_extension("version")) == ("event", 2)
    assert event.get_data() == {"sku": "MUG-1", "old_price": "1.00", "new_price": "2.00", "price_version": 1, "currency": "EUR"}


def test_the_first_message_of_a_conversation_has_no_causation_attribute_at_all():
    envelope = publish(_price_changed())
    stored = OutboxMessage.objects.get(message_id=envelope.id).envelope

    event = _as_cloudevent(stored)

    assert "causationid" not in stored
    assert event.get_extension("correlationid") == str(envelope.id)
    assert event.get_extension("causationid") is None


def test_an_envelope_written_under_the_former_attribute_names_is_still_read():
    conversation, cause = uuid.uuid4(), uuid.uuid4()
    former = {
        "id": str(uuid.uuid4()), "type": "catalog.ProductPriceChanged", "kind": "event", "version": 1,
        "source": "catalog", "time": "2026-01-01T00:00:00Z", "correlation_id": str(conversation),
        "causation_id": str(cause), "data": {},
    }

    envelope = Envelope.model_validate(former)

    assert (envelope.correlationid, envelope.causationid) == (conversation, cause)
    assert {"correlationid", "causationid"} <= envelope.to_json_dict().keys()
    assert not {"correlation_id", "causation_id"} & envelope.to_json_dict().keys()


def test_a_published_message_carries_its_conversation_in_the_amqp_correlation_id_and_its_id_as_task_id():
    conversation = uuid.uuid4()
    envelope = Envelope(
        id=uuid.uuid4(), type="catalog.ProductPriceChanged", kind="event", version=1, source="catalog",
        time=datetime.datetime.now(datetime.UTC), correlationid=conversation, data={},
    ).to_json_dict()

    with Connection("memory://") as connection:
        channel = connection.channel()
        outside = Queue("outside-service", Exchange("events.catalog.ProductPriceChanged", type="fanout"))(channel)
        outside.declare()
        producer = current_app.amqp.Producer(channel, auto_declare=False)
        publish_envelope(producer, envelope, exchange="events.catalog.ProductPriceChanged",
                         routing_key="catalog.ProductPriceChanged")
        message = outside.get(no_ack=True)

    assert message.properties["correlation_id"] == str(conversation)
    assert message.headers["id"] == envelope["id"]  # Celery's task id stays the message id
    assert json.loads(message.body)[1]["envelope"] == envelope
