"""The bus's Redis transport on a real redis-server: what it adds to kombu's.

A message is held by the consumer that took it from the moment Redis hands it
out (kombu's BRPOP popped it first and recorded it later: a worker killed in
between lost it); each event copy is its own message in its own queue (kombu's
shared one delivery tag between copies: one subscriber's ack dropped another's
unacked copy, and restoring a copy sent it to every subscriber again); a
message handed out past the delivery limit, or rejected, moves to the
dead-letter queue with RabbitMQ's ``x-death`` header; a route with no queue is
reported; and nothing is left behind once a message is acked.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid

import pytest
from kombu import Consumer, Exchange, Queue
from messaging import brokers
from messaging.brokers.base import DEAD_LETTER_QUEUE, Outgoing
from messaging.brokers.redis import GROUP

from tests.polling import wait_for

pytestmark = pytest.mark.integration

EVENT = "catalog.ProductPriceChanged"
EXCHANGE = Exchange(f"events.{EVENT}", type="direct", durable=True)
SUBSCRIBERS = ("basket", "ordering")


def _queue(context: str) -> Queue:
    return Queue(f"{context}.events.{EVENT}", exchange=EXCHANGE, routing_key=EVENT, durable=True)


def _envelope() -> dict:
    message_id = str(uuid.uuid4())
    return {"id": message_id, "type": EVENT, "kind": "event", "version": 1, "source": "catalog",
            "time": "2026-01-01T00:00:00Z", "correlationid": message_id, "data": {}}


@pytest.fixture
def redis_broker(redis_server, settings):
    """The adapter of a Redis with the event's two subscriber queues declared, and a raw client."""
    settings.BUS_REDIS_VISIBILITY_TIMEOUT = 1
    broker = brokers.for_url(redis_server.url)
    with broker.connection() as connection:
        channel = connection.default_channel
        client = channel.client
        client.flushdb()
        for context in SUBSCRIBERS:
            _queue(context)(channel).declare()
        yield broker, connection, client


def _publish(connection, broker, envelopes, exchange=EXCHANGE, routing_key=EVENT):
    publisher = broker.publisher(connection.channel(), timeout=5)
    return publisher.publish([Outgoing(e, exchange=exchange, routing_key=routing_key) for e in envelopes])


def _pending(client, context: str) -> int:
    """Messages of the context's queue taken and not acked yet."""
    return client.xpending(f"{context}.events.{EVENT}", GROUP)["pending"]


def _stored(client, context: str) -> int:
    """Messages the context's queue holds, waiting or taken and not acked yet."""
    return client.xlen(f"{context}.events.{EVENT}")


def _take(connection, context: str):
    return wait_for(lambda: _queue(context)(connection.channel()).get(no_ack=False), timeout=5,
                    message=f"{context}'s copy")


def test_an_event_is_one_copy_per_subscriber_queue_each_its_own_message(redis_broker):
    broker, connection, client = redis_broker

    outcome = _publish(connection, broker, [_envelope()])

    assert outcome.confirmed == [0] and outcome.error is None
    copies = {context: _take(connection, context) for context in SUBSCRIBERS}
    assert copies["basket"].delivery_tag != copies["ordering"].delivery_tag
    for context, message in copies.items():
        # Routed to its queue alone: given back, it returns there and nowhere else.
        assert message.delivery_info["exchange"] == ""
        assert message.delivery_info["routing_key"] == f"{context}.events.{EVENT}"


def test_one_subscribers_ack_leaves_the_others_copy_waiting_to_come_back(redis_broker):
    broker, connection, client = redis_broker
    _publish(connection, broker, [_envelope()])
    basket_copy = _take(connection, "basket")
    ordering_copy = _take(connection, "ordering")

    ordering_copy.ack()

    # basket's worker died holding its copy: it is still pending, and comes back to basket only.
    assert _pending(client, "basket") == 1
    channel = connection.channel()
    wait_for(lambda: channel.restore_idle([f"basket.events.{EVENT}"]) == 1, timeout=10,
             message="the visibility timeout to give basket's copy back")
    assert (_pending(client, "basket"), _stored(client, "basket")) == (0, 1)
    assert _stored(client, "ordering") == 0
    again = _take(connection, "basket")
    assert again.headers["id"] == basket_copy.headers["id"] and again.headers["redelivered"] is True
    # A tag of its own: were the first holder alive, its ack could not settle this copy.
    assert again.delivery_tag != basket_copy.delivery_tag


def test_a_message_handed_out_past_the_delivery_limit_becomes_a_dead_letter(redis_broker, settings):
    broker, connection, client = redis_broker
    settings.BUS_DELIVERY_LIMIT = 2
    envelope = _envelope()
    _publish(connection, broker, [envelope])

    for _ in range(settings.BUS_DELIVERY_LIMIT + 1):  # a worker dying with it each time
        _take(connection, "basket").reject(requeue=True)

    assert _queue("basket")(connection.channel()).get(no_ack=False) is None
    [dead] = [broker.dead_letter_queue()(connection.channel()).get(no_ack=True)]
    assert dead.headers["id"] == envelope["id"]
    assert dead.headers["x-death"][0]["queue"] == f"basket.events.{EVENT}"
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    # ordering's copy is untouched, and nothing is left in basket's queue.
    assert _stored(client, "ordering") == 1
    assert _stored(client, "basket") == 0


def test_a_rejected_message_becomes_a_dead_letter_not_a_deletion(redis_broker):
    broker, connection, client = redis_broker
    envelope = _envelope()
    _publish(connection, broker, [envelope])

    _take(connection, "basket").reject(requeue=False)

    dead = broker.dead_letter_queue()(connection.channel()).get(no_ack=True)
    assert dead.headers["id"] == envelope["id"]
    assert dead.headers["x-death"][0] == {**dead.headers["x-death"][0], "queue": f"basket.events.{EVENT}",
                                           "reason": "rejected"}
    assert _stored(client, "basket") == 0 and client.xlen(DEAD_LETTER_QUEUE) == 0


def test_an_acked_message_leaves_nothing_behind(redis_broker):
    broker, connection, client = redis_broker
    _publish(connection, broker, [_envelope()])

    _take(connection, "basket").reject(requeue=True)
    _take(connection, "basket").ack()

    assert (_stored(client, "basket"), _pending(client, "basket")) == (0, 0)


def test_a_route_no_queue_is_bound_to_is_reported_unroutable_and_stored_nowhere(redis_broker):
    broker, connection, client = redis_broker
    nobody = Exchange("events.catalog.NobodyListens", type="direct", durable=True)
    nobody(connection.default_channel).declare()
    before = set(client.keys("*"))

    outcome = _publish(connection, broker, [_envelope(), _envelope()], exchange=nobody,
                       routing_key="catalog.NobodyListens")

    assert outcome.unroutable == [0, 1] and outcome.confirmed == []
    assert set(client.keys("*")) == before


def test_a_batch_is_confirmed_once_redis_has_every_copy(redis_broker):
    broker, connection, client = redis_broker

    outcome = _publish(connection, broker, [_envelope() for _ in range(50)])

    assert outcome.confirmed == list(range(50))
    assert _stored(client, "basket") == 50 == _stored(client, "ordering")
    assert client.xlen(DEAD_LETTER_QUEUE) == 0


def test_a_batch_cut_off_by_a_lost_connection_counts_nothing_as_confirmed(redis_broker):
    broker, connection, client = redis_broker
    publisher = broker.publisher(connection.channel(), timeout=5)
    client.client_kill_filter(_type="normal", skipme=True)  # every other connection, the publisher's too
    client.config_set("requirepass", "now-refused")
    try:
        outcome = publisher.publish([Outgoing(_envelope(), exchange=EXCHANGE, routing_key=EVENT) for _ in range(3)])
    finally:
        client.execute_command("AUTH", "now-refused")
        client.config_set("requirepass", "")

    assert outcome.error is not None and outcome.confirmed == []


TAKE_AND_DIE = textwrap.dedent("""
    import os, signal, sys, time
    import django
    django.setup()
    from kombu import Exchange, Queue
    from messaging import brokers

    with brokers.for_url(sys.argv[1]).connection() as connection:
        channel = connection.channel()
        exchange = Exchange("events.%s" % sys.argv[2], type="direct", durable=True)
        Queue("basket.events.%s" % sys.argv[2], exchange=exchange, routing_key=sys.argv[2],
              durable=True)(channel).consume(callback=lambda body, message: None)
        channel.connection.cycle.on_poll_start()  # a worker's event loop: sends the take
        time.sleep(0.5)         # Redis has answered; the reply is unread
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_consumer_killed_in_the_instant_it_takes_a_message_does_not_lose_it(redis_broker, redis_server):
    broker, connection, client = redis_broker
    envelope = _envelope()
    _publish(connection, broker, [envelope])

    taker = subprocess.run([sys.executable, "-c", TAKE_AND_DIE, redis_server.url, EVENT], check=False,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True)

    assert taker.returncode == -signal.SIGKILL, taker.stderr
    # Redis handed it out (kombu's BRPOP would have popped it: gone with the process), and
    # holds it for the consumer that died; the visibility timeout gives it back.
    assert (_pending(client, "basket"), _stored(client, "basket")) == (1, 1)
    again = _take(connection, "basket")
    assert again.headers["id"] == envelope["id"] and again.headers["redelivered"] is True
    again.ack()
    assert _stored(client, "basket") == 0


def test_a_consumer_holding_nothing_is_forgotten_once_idle_past_the_visibility_timeout(redis_broker):
    broker, connection, client = redis_broker
    _publish(connection, broker, [_envelope()])
    message = _take(connection, "basket")
    message.ack()
    queue = f"basket.events.{EVENT}"
    consumers = lambda: [c["name"].decode() for c in client.xinfo_consumers(queue, GROUP)]
    assert message.channel.consumer_name in consumers()

    # Each worker start adds a consumer to the group; a sweep forgets those gone idle, holding nothing.
    wait_for(lambda: (connection.channel().restore_idle([queue]), message.channel.consumer_name not in consumers())[1],
             timeout=10, message="the sweep to forget the idle consumer")


@pytest.mark.parametrize("fields", [{"payload": b"\x80not json"}, {"payload": b'{"properties": []}'}, {"other": b"x"},
                                    {"payload": b'{"properties": {}}', "handouts": b"many"}],
                         ids=["not JSON", "properties not an object", "no payload", "hand-outs not a number"])
def test_an_entry_that_is_no_message_becomes_a_dead_letter_with_its_bytes(redis_broker, fields):
    broker, connection, client = redis_broker
    queue = f"basket.events.{EVENT}"
    client.xadd(queue, fields)  # written by something other than the bus

    assert _queue("basket")(connection.channel()).get(no_ack=False) is None

    dead = broker.dead_letter_queue()(connection.channel()).get(no_ack=True)
    assert dead.headers["x-death"][0]["queue"] == queue and dead.headers["x-death"][0]["reason"] == "unreadable"
    assert dead.body == fields.get("payload", b"")
    assert (_stored(client, "basket"), _pending(client, "basket")) == (0, 0)



def _consume(connection, queues, *, prefetch: int):
    """A channel consuming ``queues`` with ``prefetch`` unacked messages at most, and what it receives."""
    channel = connection.channel()
    channel.basic_qos(0, prefetch, False)
    received = []
    Consumer(channel, queues=queues, on_message=received.append).consume()
    return channel, received


def test_a_consumer_allowed_one_message_takes_one_though_several_of_its_queues_have_one(redis_broker):
    broker, connection, client = redis_broker
    _publish(connection, broker, [_envelope()])  # one in basket's queue, one in ordering's
    _, received = _consume(connection, [_queue("basket"), _queue("ordering")], prefetch=1)

    connection.drain_events(timeout=5)

    # A blocking XREADGROUP over both would have handed out both: one more than allowed,
    # waiting in the worker while the visibility timeout runs.
    assert len(received) == 1
    assert _pending(client, "basket") + _pending(client, "ordering") == 1


def test_a_queue_deleted_while_its_consumer_waits_on_it_is_made_again_and_read(redis_broker):
    broker, connection, client = redis_broker
    channel, received = _consume(connection, [_queue("basket")], prefetch=1)
    channel.brpop_timeout = 30  # each blocking read waits longer than the test
    with pytest.raises(socket.timeout):
        connection.drain_events(timeout=1.5)  # nothing there: now blocked on the stream

    client.delete(f"basket.events.{EVENT}")  # Redis 7 answers the blocked read UNBLOCKED
    with pytest.raises(socket.timeout):
        connection.drain_events(timeout=1.5)
    _queue("basket")(connection.default_channel).declare()
    _publish(connection, broker, [_envelope()])
    connection.drain_events(timeout=5)

    assert len(received) == 1
