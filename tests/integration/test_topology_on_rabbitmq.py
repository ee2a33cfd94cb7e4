"""What the platform's own processes declare on an empty RabbitMQ is the topology the bus needs.

Each test starts one process on a vhost of its own, empty, and reads what
RabbitMQ then has (``rabbitmqctl``). The expected topology is written out here
from the registry (who handles what) and the settings, not taken from
``messaging.topology``: a declaration dropped there fails these tests.
"""

import os
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import transaction

from apps.catalog.messages import ProductPriceChanged
from messaging import brokers
from messaging.health import read_health
from messaging.models import OutboxMessage
from messaging.registry import registry
from messaging.brokers.base import retry_ceiling
from tests.integration.rabbitmq import empty_vhost, rabbitmqctl
from tests.polling import wait_for
from tests.senders import publish

pytestmark = pytest.mark.integration


def _expected_topology(settings) -> dict:
    """Exchanges by name (type), queues by name (arguments), and bindings
    (exchange, queue, routing key), as RabbitMQ lists them."""
    context_queue = {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.BUS_DELIVERY_LIMIT,
        "x-dead-letter-exchange": "dead-letters",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    exchanges = {"commands": "direct", "dead-letters": "fanout"}
    queues = {"dead-letters": {"x-queue-type": "quorum"}}
    bindings = {("dead-letters", "dead-letters", "dead-letters")}
    for contract in registry.contracts:
        if contract.kind == "event":  # an exchange even for an event nobody subscribes to yet
            exchanges[f"events.{contract.type_name()}"] = "fanout"
    for handler in registry.handlers:
        if handler.kind == "command":
            queue, exchange = f"{handler.context}.commands", "commands"
        else:
            queue, exchange = f"{handler.context}.events.{handler.message_type}", f"events.{handler.message_type}"
        queues[queue] = context_queue
        bindings.add((exchange, queue, handler.message_type))
        # Its retries come back through its context's return exchange, by its name.
        exchanges[f"retried.{handler.context}"] = "direct"
        bindings.add((f"retried.{handler.context}", queue, queue))
    # Each context one holding queue per step of the retry schedule.
    for context in {handler.context for handler in registry.handlers}:
        for delay_ms in sorted({round(retry_ceiling(n) * 1000) for n in range(settings.BUS_MAX_RETRIES)}):
            name = f"retry.{context}.{delay_ms}ms"
            exchanges[name] = "fanout"
            # A quorum queue, as every queue of the bus: replicated on a cluster's nodes.
            queues[name] = {"x-queue-type": "quorum", "x-message-ttl": delay_ms,
                            "x-dead-letter-exchange": f"retried.{context}",
                            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
            bindings.add((name, name, name))
    return {"exchanges": exchanges, "queues": queues, "bindings": bindings}


def _celerys_own(name: str) -> bool:
    """Celery's remote control and events, which a worker declares beside the bus."""
    return name in ("celeryev", "celery.pidbox", "reply.celery.pidbox") or name.endswith(".celery.pidbox")


def _declared_on(vhost: str) -> dict:
    """The bus's exchanges, queues and bindings RabbitMQ has on ``vhost``, all durable."""
    exchanges = [e for e in rabbitmqctl("list_exchanges", "name", "type", "durable", vhost=vhost)
                 if e["name"] and not e["name"].startswith("amq.") and not _celerys_own(e["name"])]
    queues = [q for q in rabbitmqctl("list_queues", "name", "durable", "arguments", vhost=vhost)
              if not _celerys_own(q["name"])]
    bindings = rabbitmqctl("list_bindings", "source_name", "destination_name", "routing_key", vhost=vhost)
    assert all(e["durable"] for e in exchanges) and all(q["durable"] for q in queues)
    return {
        "exchanges": {e["name"]: e["type"] for e in exchanges},
        # Arguments come as [name, AMQP type, value].
        "queues": {q["name"]: {name: value for name, _, value in q["arguments"]} for q in queues},
        # The default exchange's binding to every queue is RabbitMQ's own.
        "bindings": {(b["source_name"], b["destination_name"], b["routing_key"]) for b in bindings
                     if b["source_name"] and not _celerys_own(b["source_name"])},
    }


@pytest.fixture
def scratch_vhost(real_services, transactional_db):
    """An empty vhost beside the tests' own; the processes started here share the test database."""
    name = f"{settings.CELERY_BROKER_URL.rsplit('/', 1)[-1]}-topology-{os.getpid()}"
    with empty_vhost(name) as url:
        yield name, url


@pytest.fixture
def process_settings(settings):
    """The retry schedule and delivery limit the processes started here run with: the test's own."""
    return {name: str(getattr(settings, name))
            for name in ("BUS_RETRY_BACKOFF", "BUS_RETRY_BACKOFF_MAX", "BUS_MAX_RETRIES", "BUS_DELIVERY_LIMIT")}


def test_the_relay_alone_declares_every_exchange_queue_and_binding_on_an_empty_broker(
    scratch_vhost, start_platform, process_settings, settings, tmp_path
):
    vhost, url = scratch_vhost
    settings.BUS_HEALTH_DIR = tmp_path

    start_platform(["relay"], CELERY_BROKER_URL=url, BUS_HEALTH_DIR=str(tmp_path), **process_settings)
    # After its first round the relay says idle (or failing, with why).
    health = wait_for(lambda: read_health("relay"), message="the relay's first round")

    assert health.state == "idle", health.detail
    assert _declared_on(vhost) == _expected_topology(settings)


def test_a_worker_alone_declares_every_exchange_queue_and_binding_on_an_empty_broker(
    scratch_vhost, start_platform, process_settings, settings
):
    vhost, url = scratch_vhost

    worker = start_platform(["worker-payment"], CELERY_BROKER_URL=url, **process_settings)
    worker.wait_until_ready(["worker-payment"])

    # Every queue, not only payment's: its retries and every publisher need them, relay or no relay.
    declared = _declared_on(vhost)
    assert declared == _expected_topology(settings)
    # One queue per subscribing context: a price change fans out to basket and ordering.
    assert sorted(queue for exchange, queue, _ in declared["bindings"]
                  if exchange == "events.catalog.ProductPriceChanged") == [
        "basket.events.catalog.ProductPriceChanged", "ordering.events.catalog.ProductPriceChanged"]


def test_a_queue_the_broker_refuses_to_declare_stops_no_publishing_to_the_others(
    scratch_vhost, start_platform, process_settings, settings
):
    # Given basket's price queue as an older release left it, a classic queue: the code's
    # quorum declaration of it is refused (PRECONDITION_FAILED), as one of a queue whose
    # node is down is (NOT_FOUND), each closing the channel it was made on.
    vhost, url = scratch_vhost
    refused, declared = "basket.events.catalog.ProductPriceChanged", "ordering.events.catalog.ProductPriceChanged"
    broker = brokers.for_url(url)
    with broker.connection() as connection:
        channel = connection.channel()
        channel.exchange_declare("events.catalog.ProductPriceChanged", "fanout", durable=True, auto_delete=False)
        channel.queue_declare(refused, durable=True, auto_delete=False)
        channel.queue_bind(refused, "events.catalog.ProductPriceChanged", "catalog.ProductPriceChanged")

    OutboxMessage.objects.all().delete()  # what earlier tests left would be published here too
    relay = start_platform(["relay"], CELERY_BROKER_URL=url, **process_settings)
    with transaction.atomic():
        envelope = publish(ProductPriceChanged(sku="DECLARE-1", old_price=Decimal("1.00"), new_price=Decimal("2.00"),
                                               price_version=1, currency="EUR"))

    # The relay declared the rest, published the event, and said what it could not declare.
    wait_for(lambda: OutboxMessage.objects.filter(message_id=envelope.id, published_at__isnull=False).exists(),
             message="the event to be published")
    with broker.connection() as connection:
        # Read from the queues themselves: rabbitmqctl's counts lag by seconds.
        assert broker.queue_depths(connection.channel(), [declared, refused]) == {declared: 1, refused: 1}
    assert set(_expected_topology(settings)["queues"]) <= {q["name"] for q in rabbitmqctl("list_queues", "name", vhost=vhost)}
    log = relay["relay"].log_path.read_text()
    assert f"could not declare {refused} (Queue.declare: (406) PRECONDITION_FAILED - inequivalent arg" in log
    assert "`manage.py bus_topology --plan` shows what brings it to the code's." in log
