"""The topology in the code is the topology RabbitMQ has."""

import pytest

from messaging.topology import Topology
from tests.integration.rabbitmq import rabbitmqctl

pytestmark = pytest.mark.integration


def test_every_exchange_queue_and_binding_is_declared_on_rabbitmq(bus):
    expected = Topology().describe()

    exchanges = {e["name"]: e for e in rabbitmqctl("list_exchanges", "name", "type", "durable")}
    for exchange in expected["exchanges"]:
        assert exchanges[exchange["name"]]["type"] == exchange["type"]
        assert exchanges[exchange["name"]]["durable"] is True

    queues = {q["name"]: q for q in rabbitmqctl("list_queues", "name", "durable")}
    bindings = {
        (b["source_name"], b["destination_name"], b["routing_key"])
        for b in rabbitmqctl("list_bindings", "source_name", "destination_name", "routing_key")
    }
    for queue in expected["queues"]:
        assert queues[queue["name"]]["durable"] is True
        for bound in queue["bindings"]:
            assert (bound["exchange"], queue["name"], bound["routing_key"]) in bindings


def test_a_price_change_fans_out_to_one_queue_per_subscribing_context(bus):
    bindings = rabbitmqctl("list_bindings", "source_name", "destination_name")

    bound = sorted(b["destination_name"] for b in bindings if b["source_name"] == "events.catalog.ProductPriceChanged")

    assert bound == ["basket.events.catalog.ProductPriceChanged", "ordering.events.catalog.ProductPriceChanged"]
