"""The relay's bookkeeping: a batch is confirmed together, only confirmed rows are marked.

The relay runs as it does in production, through its public methods; only the
broker is fake: the relay's ``connect`` hands it connections whose channel
answers as RabbitMQ does (``ConfirmingChannel``).
"""

import json
from decimal import Decimal
from types import SimpleNamespace

import pytest
from amqp.exceptions import NotFound

from apps.catalog.messages import ProductPriceChanged
from messaging.brokers.base import ConfirmTimeoutError, PublishRefusedError
from messaging.brokers.rabbitmq import ConfirmedPublisher
from messaging.models import OutboxMessage
from tests.brokers import on_broker
from tests.senders import publish
from messaging.relay import Relay

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def on_rabbitmq(settings):
    """The relay these tests drive is RabbitMQ's (publisher confirms, mandatory publishes,
    returns), whatever broker the environment names: the fake channel answers as RabbitMQ."""
    on_broker(settings, "rabbitmq")


class ConfirmingChannel:
    """A channel in confirm mode that answers as RabbitMQ does, when the client reads.

    Confirms come as one ``multiple`` ack for the leading run and single
    acks or nacks after it; tags in ``nack`` are refused, tags in ``lose``
    never answered, tags in ``unroutable`` returned (before their ack, as
    RabbitMQ does for a mandatory message no queue is bound to), and publish
    number ``broken_at`` raises a connection error.
    """

    def __init__(self, *, nack=(), lose=(), unroutable=(), broken_at=None, undeclarable=()):
        self.nack, self.lose, self.unroutable, self.broken_at = set(nack), set(lose), set(unroutable), broken_at
        #: Queues whose declaration the broker refuses, as it does one whose node is down.
        self.undeclarable = set(undeclarable)
        self.events = {"basic_ack": set(), "basic_nack": set(), "basic_return": set()}
        self.sent, self.unanswered, self.connection = [], [], self
        self.headers: dict[int, dict] = {}
        self.routes: list[tuple[str, str]] = []  # (exchange, routing key) of each publish
        #: What was declared, in order: ("exchange", name), ("queue", name), ("binding", exchange, queue, key).
        self.declared: list[tuple] = []
        #: Declarations and publishes, in the order the channel got them.
        self.log: list[str] = []

    def exchange_declare(self, exchange, type, **options):
        self.declared.append(("exchange", exchange))
        self.log.append("declare")

    def prepare_queue_arguments(self, arguments, **options):
        return arguments

    def queue_declare(self, queue, **options):
        if queue in self.undeclarable:
            raise NotFound(f"NOT_FOUND - home node 'rabbit@h2' of durable queue '{queue}' in vhost '/' is down "
                           "or inaccessible")
        self.declared.append(("queue", queue))
        self.log.append("declare")
        return queue, 0, 0  # (name, messages, consumers), as queue.declare-ok

    def queue_bind(self, queue, exchange, routing_key="", **options):
        self.declared.append(("binding", exchange, queue, routing_key))

    def confirm_select(self):
        pass

    def prepare_message(self, body, priority=None, content_type=None, content_encoding=None,
                        headers=None, properties=None):
        return body, headers

    def send_method(self, sig, format=None, args=None, content=None, **options):
        # How py-amqp's basic_publish sends (the publisher sends so without its socket poll).
        assert sig == (60, 40), "only basic.publish is sent as a method here"
        _, exchange, routing_key, mandatory, _ = args
        self.basic_publish(content, exchange=exchange, routing_key=routing_key, mandatory=mandatory)

    def basic_publish(self, message, exchange="", routing_key="", mandatory=False, **options):
        body, headers = message
        if len(self.sent) + 1 == self.broken_at:
            raise ConnectionResetError("connection reset by peer")
        self.sent.append(json.loads(body)[1]["envelope"]["id"])
        self.log.append("publish")
        self.routes.append((exchange, routing_key))
        self.unanswered.append(len(self.sent))
        self.headers[len(self.sent)] = headers
        assert mandatory, "every bus message is published mandatory"

    def drain_events(self, timeout=None):
        answer = [tag for tag in self.unanswered if tag not in self.lose]
        if not answer:
            raise TimeoutError("timed out")
        self.unanswered = [tag for tag in self.unanswered if tag in self.lose]
        for tag in answer:
            if tag in self.unroutable:
                returned = SimpleNamespace(properties={"application_headers": self.headers[tag]})
                for callback in self.events["basic_return"]:
                    callback(Exception("NO_ROUTE"), "exchange", "key", returned)
        leading = 0
        while leading < len(answer) and answer[leading] == answer[0] + leading and answer[leading] not in self.nack:
            leading += 1
        if leading:
            self._emit("basic_ack", answer[leading - 1], multiple=True)
        for tag in answer[leading:]:
            self._emit("basic_nack" if tag in self.nack else "basic_ack", tag, multiple=False)

    def _emit(self, event, tag, multiple):
        for callback in self.events[event]:
            callback(tag, multiple)


@pytest.fixture
def three_rows():
    return [
        str(publish(ProductPriceChanged(sku=f"SKU-{i}", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1, currency="EUR")).id)
        for i in range(3)
    ]


class FakeConnection:
    """A kombu connection to the fake broker, as ``Relay.connect`` returns one: its
    default channel is a ``ConfirmingChannel``; it says how it was closed."""

    connection_errors = (ConnectionError,)
    alt: list[str] = []  # one node: no failover addresses

    def __init__(self, channel: ConfirmingChannel) -> None:
        self.default_channel = channel
        channel.connection = self
        self.closed: str | None = None  # "released" (a clean close) or "collected" (dropped, no handshake)

    def channel(self):
        # The topology is declared on a channel of its own: here the one channel, to log it in order.
        return self.default_channel

    def drain_events(self, timeout=None):
        self.default_channel.drain_events(timeout=timeout)

    def ensure_connection(self, max_retries=None):
        return self

    def as_uri(self) -> str:
        return "amqp://guest:**@fake-broker:5672//"

    def release(self) -> None:
        self.closed = "released"

    def collect(self) -> None:
        self.closed = "collected"


def _relay_on(*channels: ConfirmingChannel) -> Relay:
    """A relay whose first connection has the first channel, and each reconnection the next."""
    connections = iter(FakeConnection(channel) for channel in channels)
    return Relay(batch_size=10, confirm_timeout=0.2, connect=lambda: next(connections))


def _published_flags():
    return [row.published_at is not None for row in OutboxMessage.objects.order_by("id")]


def test_a_batch_is_published_in_order_and_marked_once_confirmed(three_rows):
    channel = ConfirmingChannel()

    assert _relay_on(channel).publish_batch() == 3

    assert channel.sent == three_rows
    assert _published_flags() == [True, True, True]


def test_a_dead_letters_retry_goes_to_the_failing_contexts_queue_not_the_fanout_exchange():
    from messaging.contracts import Envelope
    from messaging.outbox import redeliver

    envelope = publish(ProductPriceChanged(sku="SKU-1", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1, currency="EUR"))
    OutboxMessage.objects.update(published_at="2026-01-01T00:00:00Z")
    redeliver(Envelope.model_validate(envelope.to_json_dict()), context="ordering")
    channel = ConfirmingChannel()

    assert _relay_on(channel).publish_batch() == 1

    assert channel.sent == [str(envelope.id)]
    assert channel.routes == [("", "ordering.events.catalog.ProductPriceChanged")]  # the default exchange
    assert OutboxMessage.objects.get(redeliver_to="ordering").published_at is not None


def test_a_refused_row_stays_unpublished_with_its_error_and_the_rest_are_marked(three_rows):
    channel = ConfirmingChannel(nack={2})
    relay = _relay_on(channel)

    with pytest.raises(PublishRefusedError):
        relay.publish_batch()

    assert _published_flags() == [True, False, True]
    refused = OutboxMessage.objects.order_by("id")[1]
    assert refused.attempts == 1 and refused.last_error.startswith("PublishRefusedError")
    # The next round sends it again, on the same channel: a refusal leaves the numbering known.
    assert relay.publish_batch() == 1
    assert channel.sent == [*three_rows, three_rows[1]]
    assert _published_flags() == [True, True, True]


def test_a_returned_command_stays_unpublished_with_its_error():
    from apps.catalog.messages import ReleaseStock
    from tests.senders import send

    send(ReleaseStock(order_id="6f1c2a7e-58a4-4f5e-9a53-3c1b0b2a7d10"))

    with pytest.raises(PublishRefusedError, match="unroutable"):
        _relay_on(ConfirmingChannel(unroutable={1})).publish_batch()

    row = OutboxMessage.objects.get()
    assert row.published_at is None and row.attempts == 1 and "no queue bound" in row.last_error


def test_a_returned_event_some_context_handles_stays_unpublished(three_rows):
    with pytest.raises(PublishRefusedError):
        _relay_on(ConfirmingChannel(unroutable={3})).publish_batch()

    assert _published_flags() == [True, True, False]


def test_a_returned_event_nobody_subscribes_to_is_published_to_no_one(caplog):
    from apps.ordering.messages import OrderPaid

    publish(OrderPaid(order_id="6f1c2a7e-58a4-4f5e-9a53-3c1b0b2a7d10"))

    assert _relay_on(ConfirmingChannel(unroutable={1})).publish_batch() == 1

    assert _published_flags() == [True]
    assert "no queue is bound to ordering.OrderPaid" in caplog.text


def test_rows_without_a_confirm_in_time_are_never_marked(three_rows):
    with pytest.raises(ConfirmTimeoutError):
        _relay_on(ConfirmingChannel(lose={3})).publish_batch()

    assert _published_flags() == [True, True, False]
    unconfirmed = OutboxMessage.objects.order_by("id")[2]
    assert unconfirmed.attempts == 1 and "unconfirmed" in unconfirmed.last_error


def test_a_connection_lost_mid_batch_keeps_every_unconfirmed_row(three_rows):
    broken, retry = ConfirmingChannel(broken_at=2), ConfirmingChannel()
    relay = _relay_on(broken, retry)

    with pytest.raises(ConnectionResetError):
        relay.publish_batch()

    # The first row was sent but never confirmed: it is sent again, not marked.
    assert _published_flags() == [False, False, False]
    assert [row.attempts for row in OutboxMessage.objects.order_by("id")] == [1, 1, 1]
    # The broken connection is dropped without a close handshake; the next round opens another.
    assert broken.connection.closed == "collected"
    assert relay.publish_batch() == 3
    assert retry.sent == three_rows
    assert _published_flags() == [True, True, True]


def test_the_relay_declares_the_whole_topology_before_its_first_publish(three_rows):
    from messaging.topology import Topology

    channel = ConfirmingChannel()

    _relay_on(channel).publish_batch()

    # Every subscriber's queue exists before the first event goes out, even if its worker never ran.
    assert "declare" in channel.log and "declare" not in channel.log[channel.log.index("publish"):]
    assert {name for kind, name, *_ in channel.declared if kind == "queue"} == {q.name for q in Topology().queues()}
    assert ("binding", "events.catalog.ProductPriceChanged", "basket.events.catalog.ProductPriceChanged",
            "catalog.ProductPriceChanged") in channel.declared


def test_a_queue_the_broker_cannot_declare_now_holds_up_no_publishing(three_rows, caplog):
    from messaging.topology import Topology

    # A node down: a retry queue it leads and one subscriber's queue cannot be declared.
    retry_queue = next(q.name for q in Topology().queues() if q.name.startswith("retry.ordering."))
    undeclarable = {retry_queue, "ordering.events.catalog.ProductPriceChanged"}
    channel = ConfirmingChannel(undeclarable=undeclarable)

    assert _relay_on(channel).publish_batch() == 3

    assert _published_flags() == [True, True, True]
    assert ("queue", "basket.events.catalog.ProductPriceChanged") in channel.declared
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("could not declare")]
    assert sorted(m.split(" (")[0] for m in refusals) == [f"could not declare {name}" for name in sorted(undeclarable)]
    assert all("home node 'rabbit@h2'" in m and "publishing and consuming go on for the rest" in m for m in refusals)


def test_a_relay_tries_each_node_of_a_failover_url_once_and_says_which_it_reached(caplog):
    from kombu import Connection

    url = "amqp://bus:secret@h1:5672/shop;amqp://bus:secret@h2:5672/shop;amqp://bus:secret@h3:5672/shop"
    tried = []

    class OnlyTheThirdNodeUp(Connection):
        def _establish_connection(self):
            tried.append(self.hostname)
            if self.hostname != "h3":
                raise ConnectionRefusedError(f"{self.hostname} is down")
            return SimpleNamespace()

    relay = Relay(batch_size=10, confirm_timeout=0.2)
    relay._connection = OnlyTheThirdNodeUp(url)
    caplog.set_level("INFO", logger="messaging.relay")

    relay._reach_a_node()

    assert tried == ["h1", "h2", "h3"]
    assert caplog.messages == ["relay: connected to amqp://bus:**@h3:5672/shop"]


def test_a_relay_that_reaches_no_node_says_so_without_a_password():
    from kombu import Connection
    from messaging.relay import BrokerUnreachableError

    class AllDown(Connection):
        def _establish_connection(self):
            raise ConnectionRefusedError(f"{self.hostname} is down")

    relay = Relay(batch_size=10, confirm_timeout=0.2)
    relay._connection = AllDown("amqp://bus:secret@h1:5672/shop;amqp://bus:secret@h2:5672/shop")

    with pytest.raises(BrokerUnreachableError) as error:
        relay._reach_a_node()

    assert "cannot reach the broker at amqp://bus:**@" in str(error.value) and "secret" not in str(error.value)


def test_a_reconnection_declares_the_topology_again_only_after_a_row_came_back_unroutable(three_rows):
    # A broken connection (a node lost): the next one publishes at once, declaring nothing,
    # since on a cluster a declaration would wait until the others declared that node down.
    first, second, third = ConfirmingChannel(broken_at=1), ConfirmingChannel(unroutable={1}), ConfirmingChannel()
    relay = _relay_on(first, second, third)
    with pytest.raises(ConnectionResetError):
        relay.publish_batch()
    with pytest.raises(PublishRefusedError):
        relay.publish_batch()
    # A row came back unroutable (a queue deleted under the relay): the next connection declares again.
    relay.publish_batch()

    assert "declare" in first.log and "declare" not in second.log and "declare" in third.log
    assert _published_flags() == [True, True, True]


def test_dead_letters_that_cannot_be_collected_hold_up_no_round_while_their_wait_lasts(three_rows, monkeypatch):
    tries = []

    def collect(channel, **options):
        tries.append(channel)
        raise ConnectionError("INTERNAL_ERROR - Cannot get a message from queue 'dead-letters': nodedown")

    monkeypatch.setattr("messaging.relay.collect_broker_dead_letters", collect)
    relay = _relay_on(ConfirmingChannel(), ConfirmingChannel())
    relay.publish_batch()

    relay._collect_dead_letters_safely()
    relay._collect_dead_letters_safely()  # within the wait: not tried

    assert len(tries) == 1
    monkeypatch.setattr(relay, "_next_collection", 0.0)
    relay._collect_dead_letters_safely()
    assert len(tries) == 2 and relay._collection_backoff == 2.0  # the wait doubles


def test_confirms_in_any_order_settle_the_right_messages():
    from messaging.brokers.base import Outgoing

    channel = ConfirmingChannel(nack={1})
    publisher = ConfirmedPublisher(channel, timeout=0.2)
    envelopes = [{"id": f"id-{i}", "type": "catalog.ProductPriceChanged"} for i in range(4)]

    outcome = publisher.publish([Outgoing(e, exchange="x", routing_key="k") for e in envelopes])

    assert (outcome.confirmed, outcome.refused, outcome.error) == ([1, 2, 3], [0], None)
    # The numbering goes on across batches on one channel.
    outcome = publisher.publish([Outgoing(envelopes[0], exchange="x", routing_key="k")])
    assert outcome.confirmed == [0]
