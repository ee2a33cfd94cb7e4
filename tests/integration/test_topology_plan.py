"""``bus_topology --plan`` and ``--apply`` on real brokers: a removed subscriber's queue and a
changed delivery limit on RabbitMQ (a vhost of the test's own), a removed subscriber and a
changed binding on Redis (the session's private redis-server). Messages put in the queues
beforehand are counted after: ``--apply`` must lose none."""

import os
from io import StringIO

import pytest
import redis
from django.conf import settings as django_settings
from django.core.management import call_command
from messaging import brokers
from messaging.topology import Topology

from tests.integration.rabbitmq import empty_vhost, rabbitmqctl
from tests.polling import wait_for

# The command reads the outbox too (copies for one context that would reach a queue by its name).
pytestmark = [pytest.mark.integration, pytest.mark.django_db]

PRICE_EXCHANGE = "events.catalog.ProductPriceChanged"
REMOVED_SUBSCRIBER = "shipping.events.catalog.ProductPriceChanged"
CHANGES_PENDING = 3


def _bus_topology(*args) -> tuple[int, str]:
    """The command's exit status and output."""
    out = StringIO()
    try:
        call_command("bus_topology", *args, stdout=out)
    except SystemExit as exc:
        return exc.code, out.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def rabbitmq_vhost(real_services, settings):
    """An empty vhost with the code's topology declared; the commands run against it."""
    name = f"{django_settings.CELERY_BROKER_URL.rsplit('/', 1)[-1]}-plan-{os.getpid()}"
    with empty_vhost(name) as url:
        settings.CELERY_BROKER_URL = url
        broker = brokers.for_url(url)
        with broker.connection() as connection:
            Topology(broker=broker).declare(connection.default_channel)
            yield name, connection.default_channel


def _queues(vhost: str) -> dict[str, dict]:
    return {q["name"]: q for q in rabbitmqctl("list_queues", "name", "messages", "arguments", vhost=vhost)}


def _publish(channel, count: int, *, exchange: str = "", routing_key: str) -> None:
    channel.confirm_select()
    for n in range(count):
        channel.basic_publish_confirm(channel.prepare_message(f"message {n}".encode(), headers={"n": n}),
                                      exchange=exchange, routing_key=routing_key)


def test_a_removed_subscribers_queue_on_rabbitmq_is_reported_with_its_messages_and_kept_until_told(rabbitmq_vhost):
    vhost, channel = rabbitmq_vhost
    channel.queue_declare(REMOVED_SUBSCRIBER, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(REMOVED_SUBSCRIBER, PRICE_EXCHANGE, "catalog.ProductPriceChanged")
    _publish(channel, 1, exchange=PRICE_EXCHANGE, routing_key="catalog.ProductPriceChanged")

    status, plan = _bus_topology("--plan")
    assert status == CHANGES_PENDING
    assert f"delete queue           {REMOVED_SUBSCRIBER} (no longer in the code; holds 1 message)" in plan

    status, applied = _bus_topology("--apply")
    assert status == CHANGES_PENDING and "kept: holds 1 message" in applied
    assert REMOVED_SUBSCRIBER in _queues(vhost)

    status, _ = _bus_topology("--apply", "--delete-unused-with-messages")
    assert status == 0
    assert REMOVED_SUBSCRIBER not in _queues(vhost)
    assert _bus_topology("--plan") == (0, f"In sync: RabbitMQ at 127.0.0.1:5672/{vhost} has what the code declares.\n")


def test_an_empty_removed_subscribers_queue_on_rabbitmq_is_deleted(rabbitmq_vhost):
    vhost, channel = rabbitmq_vhost
    channel.queue_declare(REMOVED_SUBSCRIBER, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(REMOVED_SUBSCRIBER, PRICE_EXCHANGE, "catalog.ProductPriceChanged")

    status, _ = _bus_topology("--apply")

    assert status == 0
    assert REMOVED_SUBSCRIBER not in _queues(vhost)


def test_a_changed_delivery_limit_on_rabbitmq_is_applied_keeping_every_message(rabbitmq_vhost, settings):
    vhost, channel = rabbitmq_vhost
    queue = "payment.commands"
    _publish(channel, 250, routing_key=queue)
    settings.BUS_DELIVERY_LIMIT = 9  # the code now declares another limit than the broker has

    status, plan = _bus_topology("--plan")
    assert status == CHANGES_PENDING
    assert f"{queue}: x-delivery-limit: 5 -> 9; holds 250 messages" in plan

    status, applied = _bus_topology("--apply")
    assert status == 0, applied

    declared = channel.queue_declare(queue, passive=True)
    assert declared.message_count == 250
    arguments = {name: value for name, _, value in _queues(vhost)[queue]["arguments"]}
    assert arguments["x-delivery-limit"] == 9
    bindings = {(b["source_name"], b["routing_key"]) for b in rabbitmqctl(
        "list_bindings", "source_name", "destination_name", "routing_key", vhost=vhost) if b["destination_name"] == queue}
    assert ("commands", "payment.ProcessPayment") in bindings
    assert not any(name.startswith("topology-holding.") for name in _queues(vhost))
    # Every message, in its order, body and headers as they were.
    bodies = []
    while (message := channel.basic_get(queue, no_ack=True)) is not None:
        bodies.append((message.body, message.headers["n"]))
    assert bodies == [(f"message {n}".encode(), n) for n in range(250)]


def test_a_changed_delivery_limit_is_refused_while_a_worker_consumes_the_queue(rabbitmq_vhost, settings):
    vhost, channel = rabbitmq_vhost
    _publish(channel, 3, routing_key="payment.commands")
    consumer = channel.connection.channel()
    consumer.basic_qos(0, 1, False)
    consumer.basic_consume("payment.commands", callback=lambda message: None)
    settings.BUS_DELIVERY_LIMIT = 9

    status, applied = _bus_topology("--apply")

    assert status == CHANGES_PENDING and "refused: 1 consumer(s) attached to payment.commands" in applied
    arguments = {name: value for name, _, value in _queues(vhost)["payment.commands"]["arguments"]}
    assert arguments["x-delivery-limit"] == 5


@pytest.fixture
def on_redis(redis_server, settings, real_services):
    settings.CELERY_BROKER_URL = redis_server.url
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    broker = brokers.for_url(redis_server.url)
    with broker.connection() as connection:
        Topology(broker=broker).declare(connection.default_channel)
    yield client
    client.flushdb()


def test_a_removed_subscribers_stream_on_redis_is_reported_with_its_length_and_kept_until_told(on_redis):
    client = on_redis
    client.sadd(f"_kombu.binding.{PRICE_EXCHANGE}", f"catalog.ProductPriceChanged\x06\x16\x06\x16{REMOVED_SUBSCRIBER}")
    client.xadd(REMOVED_SUBSCRIBER, {"payload": "{}", "handouts": 0})
    client.xadd(REMOVED_SUBSCRIBER, {"payload": "{}", "handouts": 0})

    status, plan = _bus_topology("--plan")
    assert status == CHANGES_PENDING
    assert f"delete queue           {REMOVED_SUBSCRIBER} (no longer in the code; holds 2 messages)" in plan

    status, _ = _bus_topology("--apply")
    assert status == CHANGES_PENDING and client.xlen(REMOVED_SUBSCRIBER) == 2

    status, _ = _bus_topology("--apply", "--delete-unused-with-messages")
    assert status == 0
    assert not client.exists(REMOVED_SUBSCRIBER)
    assert not any(REMOVED_SUBSCRIBER.encode() in member for member in client.smembers(f"_kombu.binding.{PRICE_EXCHANGE}"))


def test_a_binding_missing_or_left_over_on_redis_is_bound_again_and_removed(on_redis):
    client = on_redis
    table = "_kombu.binding.commands"
    wanted = b"payment.ProcessPayment\x06\x16\x06\x16payment.commands"
    left_over = b"payment.Retired\x06\x16\x06\x16payment.commands"
    client.srem(table, wanted)
    client.sadd(table, left_over)

    status, plan = _bus_topology("--plan")
    assert status == CHANGES_PENDING
    assert "bind                   payment.commands <- commands key=payment.ProcessPayment" in plan
    assert "unbind                 payment.commands <- commands key=payment.Retired" in plan

    status, _ = _bus_topology("--apply")

    assert status == 0
    assert wanted in client.smembers(table) and left_over not in client.smembers(table)


def test_the_classic_retry_queues_of_before_drain_into_their_queues_and_are_deleted_once_empty(rabbitmq_vhost):
    # Given a retry waiting where an older release put it: a classic `retry.<ms>ms` queue
    # (one node's), whose name the quorum retry queues no longer share, so nothing is redeclared.
    vhost, channel = rabbitmq_vhost
    old = "retry.2000ms"
    channel.exchange_declare(old, "fanout", durable=True, auto_delete=False)
    channel.queue_declare(old, durable=True, auto_delete=False,
                          arguments={"x-message-ttl": 2000, "x-dead-letter-exchange": ""})
    channel.queue_bind(old, old, old)
    channel.basic_publish(channel.prepare_message(b"a retry", properties={"expiration": "300"}),
                          exchange=old, routing_key="payment.commands")

    status, plan = _bus_topology("--plan")
    assert status == CHANGES_PENDING
    assert f"delete queue           {old} (no longer in the code" in plan

    # It expires back into the queue it came from, by name, as before,
    wait_for(lambda: channel.queue_declare("payment.commands", passive=True).message_count == 1,
             message="the old retry to come back to payment.commands")
    # and, empty, is deleted with its exchange.
    status, applied = _bus_topology("--apply")
    assert status == 0, applied
    assert old not in _queues(vhost)
    assert old not in {e["name"] for e in rabbitmqctl("list_exchanges", "name", vhost=vhost)}
    assert channel.basic_get("payment.commands", no_ack=True).body == b"a retry"
