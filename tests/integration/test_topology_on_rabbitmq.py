"""The topology in the code is the topology RabbitMQ has."""

import json
import subprocess

import pytest
from django.conf import settings

from messaging.topology import Topology

pytestmark = pytest.mark.integration


def _rabbitmqctl(*args: str) -> list[dict]:
    vhost = settings.CELERY_BROKER_URL.rsplit("/", 1)[-1] or "/"
    out = subprocess.run(
        ["rabbitmqctl", "-q", *args, "-p", vhost, "--formatter", "json"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return json.loads(out)


def test_every_exchange_queue_and_binding_is_declared_on_rabbitmq(bus):
    expected = Topology().describe()

    exchanges = {e["name"]: e for e in _rabbitmqctl("list_exchanges", "name", "type", "durable")}
    for exchange in expected["exchanges"]:
        assert exchanges[exchange["name"]]["type"] == exchange["type"]
        assert exchanges[exchange["name"]]["durable"] is True

    queues = {q["name"]: q for q in _rabbitmqctl("list_queues", "name", "durable")}
    bindings = {
        (b["source_name"], b["destination_name"], b["routing_key"])
        for b in _rabbitmqctl("list_bindings", "source_name", "destination_name", "routing_key")
    }
    for queue in expected["queues"]:
        assert queues[queue["name"]]["durable"] is True
        for bound in queue["bindings"]:
            assert (bound["exchange"], queue["name"], bound["routing_key"]) in bindings


def test_a_price_change_fans_out_to_one_queue_per_subscribing_context(bus):
    bindings = _rabbitmqctl("list_bindings", "source_name", "destination_name")

    bound = sorted(b["destination_name"] for b in bindings if b["source_name"] == "events.catalog.ProductPriceChanged")

    assert bound == ["basket.events.catalog.ProductPriceChanged", "ordering.events.catalog.ProductPriceChanged"]
