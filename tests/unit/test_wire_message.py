"""The relay's rows go on the broker as their stored envelope's text, in a task message
prepared once per type: what a worker receives is what ``for_envelope`` builds.

Each test puts the same envelope through the publisher twice, as a decoded envelope
(kombu's Producer, the path of retries) and as the outbox stores it (the relay's
path), and compares what reached the channel.
"""

import json
import uuid
from decimal import Decimal

import amqp
import pytest
from kombu.message import Message
from kombu.transport.pyamqp import Channel as AmqpChannel
from kombu.transport.virtual import Channel as VirtualChannel
from messaging.brokers.base import Outgoing
from messaging.brokers.rabbitmq import ConfirmedPublisher
from messaging.brokers.redis import RedisPublisher
from messaging.models import OutboxMessage
from messaging.relay import Relay
from messaging.task_message import (
    StoredEnvelope,
    TaskMessageTemplate,
    for_envelope,
    problem_with,
)
from messaging.topology import Topology
from messaging.worker import intake_policy

from apps.catalog.messages import ProductPriceChanged, ReleaseStock
from tests.brokers import on_broker
from tests.senders import publish, send

pytestmark = pytest.mark.django_db


class AmqpRecordingChannel:
    """A channel in confirm mode that confirms everything and keeps what it was given,
    each message made by kombu's py-amqp channel (an ``amqp.Message``, as it goes out)."""

    prepare_message = AmqpChannel.prepare_message

    def __init__(self) -> None:
        self.events = {"basic_ack": set(), "basic_nack": set(), "basic_return": set()}
        self.connection = self
        self.published: list[tuple[amqp.Message, str, str]] = []

    def confirm_select(self) -> None:
        pass

    # The relay declares its topology first: nothing to keep.
    def exchange_declare(self, *args, **options):
        pass

    def prepare_queue_arguments(self, arguments, **options):
        return arguments

    def queue_declare(self, queue, **options):
        return queue, 0, 0

    def queue_bind(self, *args, **options):
        pass

    def send_method(self, sig, format=None, args=None, content=None, **options):
        # How py-amqp's basic_publish sends (the publisher sends so without its socket poll).
        assert sig == (60, 40), "only basic.publish is sent as a method here"
        _, exchange, routing_key, mandatory, _ = args
        self.basic_publish(content, exchange=exchange, routing_key=routing_key, mandatory=mandatory)

    def basic_publish(self, message, exchange="", routing_key="", mandatory=False, **options):
        assert mandatory, "every bus message is published mandatory"
        self.published.append((message, exchange, routing_key))

    def drain_events(self, timeout=None) -> None:
        for callback in self.events["basic_ack"]:
            callback(len(self.published), True)


class RedisRecordingChannel:
    """kombu's virtual channel as far as a Redis publisher uses it: messages prepared as kombu's
    are, and a publish batch that keeps them (routed to one queue) instead of sending them."""

    prepare_message = VirtualChannel.prepare_message
    default_priority = 0

    def __init__(self) -> None:
        self.published: list[tuple[dict, str, str]] = []
        self.flushed = 0

    @staticmethod
    def bindings_read_once():
        import contextlib

        return contextlib.nullcontext()

    def create_publish_batch(self, max_size):
        channel = self

        class Batch:
            def __init__(self):
                self.channel = channel

            def publish(self, message, *, exchange, routing_key, **options):
                channel.published.append((message, exchange, routing_key))
                return [f"queue-of-{routing_key}"]

            def flush(self):
                channel.flushed += 1

            def close(self):
                pass

            def discard(self):
                pass

        return Batch()


def _envelope() -> dict:
    return publish(ProductPriceChanged(sku="MUG-1", old_price=Decimal("10.00"), new_price=Decimal("12.50"),
                                       price_version=3, currency="EUR")).to_json_dict()


def _stored(envelope: dict, *, text: str | None = None) -> StoredEnvelope:
    return StoredEnvelope(text or json.dumps(envelope), id=envelope["id"], type=envelope["type"],
                          correlationid=envelope.get("correlationid"))


def _delivery(message: amqp.Message) -> Message:
    """What a worker's consumer makes of the message: its properties encoded as AMQP
    puts them on the wire and decoded again, then a kombu message, as kombu's channel does."""
    received = amqp.Message()
    received._load_properties(message.CLASS_ID, message._serialize_properties(), 0)
    properties = received.properties
    return Message(body=message.body, headers=properties["application_headers"],
                   content_type=properties["content_type"], content_encoding=properties["content_encoding"],
                   properties=properties, delivery_info={}, accept={"application/json"})


def _published_on_rabbitmq(envelope) -> tuple[amqp.Message, str, str]:
    channel = AmqpRecordingChannel()
    route = Topology().route("event", "catalog.ProductPriceChanged")
    outcome = ConfirmedPublisher(channel, timeout=1).publish(
        [Outgoing(envelope, exchange=route.exchange, routing_key=route.routing_key)])
    assert outcome.confirmed == [0]
    [published] = channel.published
    return published


def test_the_template_fills_in_what_for_envelope_builds(settings):
    envelope = _envelope()

    wire = TaskMessageTemplate(envelope["type"]).fill(_stored(envelope))
    built = for_envelope(envelope)

    assert json.loads(wire.body) == json.loads(json.dumps(built.body))
    assert wire.headers == built.headers
    assert wire.properties == built.properties


def test_the_template_keeps_the_result_setting_as_for_envelope_does(settings):
    settings.CELERY_TASK_IGNORE_RESULT = True
    envelope = _envelope()

    wire = TaskMessageTemplate(envelope["type"]).fill(_stored(envelope))

    assert wire.headers == for_envelope(envelope).headers and wire.headers["ignore_result"] is True


def test_an_envelope_without_a_correlation_id_has_no_correlation_property():
    envelope = {key: value for key, value in _envelope().items() if key != "correlationid"}

    wire = TaskMessageTemplate(envelope["type"]).fill(_stored(envelope))

    assert wire.properties == for_envelope(envelope).properties and wire.properties["correlation_id"] is None


def test_an_envelope_of_another_type_is_refused():
    with pytest.raises(ValueError, match="ordering.PlaceOrder"):
        TaskMessageTemplate("catalog.ProductPriceChanged").fill(
            StoredEnvelope("{}", id=str(uuid.uuid4()), type="ordering.PlaceOrder"))


def test_on_rabbitmq_the_stored_envelope_goes_out_as_the_decoded_one_would(settings):
    on_broker(settings, "rabbitmq")
    envelope = _envelope()

    fast, fast_exchange, fast_key = _published_on_rabbitmq(_stored(envelope))
    slow, slow_exchange, slow_key = _published_on_rabbitmq(envelope)

    assert (fast_exchange, fast_key) == (slow_exchange, slow_key) == ("events.catalog.ProductPriceChanged",
                                                                     "catalog.ProductPriceChanged")
    assert fast.properties == slow.properties
    assert json.loads(fast.body) == json.loads(slow.body)
    assert _delivery(fast).decode() == _delivery(slow).decode()


@pytest.mark.parametrize("context", ["basket", "ordering"])
def test_on_rabbitmq_every_subscriber_accepts_the_stored_envelopes_message(settings, context):
    on_broker(settings, "rabbitmq")
    envelope = _envelope()
    # As PostgreSQL gives jsonb back: other spacing, other key order, the same JSON.
    text = json.dumps(dict(sorted(envelope.items())), separators=(",", ":"))

    message, *_ = _published_on_rabbitmq(_stored(envelope, text=text))
    delivery = _delivery(message)

    assert problem_with(delivery, intake_policy(context)) is None
    assert delivery.decode()[1]["envelope"] == envelope
    assert delivery.headers["id"] == envelope["id"] and delivery.headers["task"] == "catalog.ProductPriceChanged"


def test_on_redis_the_stored_envelope_goes_out_as_the_decoded_one_would(settings):
    on_broker(settings, "redis")
    envelope = _envelope()
    route = Topology().route("event", "catalog.ProductPriceChanged")
    channels = {"stored": RedisRecordingChannel(), "decoded": RedisRecordingChannel()}

    for name, sent in (("stored", _stored(envelope)), ("decoded", envelope)):
        outcome = RedisPublisher(channels[name], timeout=1).publish(
            [Outgoing(sent, exchange=route.exchange, routing_key=route.routing_key)] * 2)
        assert (outcome.confirmed, outcome.error) == ([0, 1], None)

    (fast, *_), (slow, *_) = channels["stored"].published[0], channels["decoded"].published[0]
    assert channels["stored"].flushed == 1  # the batch is one pipeline
    assert [where for _, *where in channels["stored"].published] == [where for _, *where in channels["decoded"].published]
    assert {**fast, "body": None} == {**slow, "body": None}
    assert json.loads(fast["body"]) == json.loads(slow["body"])
    delivery = Message(body=fast["body"], headers=fast["headers"], content_type=fast["content-type"],
                       content_encoding=fast["content-encoding"], properties=fast["properties"],
                       delivery_info={}, accept={"application/json"})
    assert problem_with(delivery, intake_policy("basket")) is None


def test_the_relay_publishes_each_row_as_for_envelope_builds_its_envelope(settings):
    on_broker(settings, "rabbitmq")
    event = _envelope()
    command = send(ReleaseStock(order_id=uuid.uuid4())).to_json_dict()
    channel = AmqpRecordingChannel()

    class Connection:
        default_channel = channel
        alt: list[str] = []

        def ensure_connection(self, max_retries=None):
            return self

        def release(self):
            pass

        def as_uri(self):
            return "amqp://recording"

    # The topology is declared on a channel of its own: here the one channel.
    Connection.channel = lambda self: self.default_channel
    assert Relay(batch_size=10, confirm_timeout=1, connect=Connection).publish_batch() == 2

    for (message, _, _), envelope in zip(channel.published, [event, command], strict=True):
        built = for_envelope(envelope)
        assert json.loads(message.body) == json.loads(json.dumps(built.body))
        assert message.properties["application_headers"] == built.headers
        assert message.properties["correlation_id"] == envelope["correlationid"]
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0
