"""The AsyncAPI document says what the code declares: the broker without its credentials,
every exchange and queue with what AMQP's binding cannot say, who sends and receives each
message, and every contract as it travels. (The official parser validates it:
tests/process/test_asyncapi.py.)"""

import io
import json
import uuid
from typing import Any

import jsonschema
import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from messaging import asyncapi, brokers
from messaging.contracts import Envelope, Event
from messaging.registry import Handler, Registry, registry
from messaging.topology import Topology
from tests.brokers import on_broker

PASSWORD = "do-not-print-me"


def _document_on(settings, url: str) -> dict:
    settings.CELERY_BROKER_URL = url
    return asyncapi.document()


def _resolve(document: dict, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    found = document
    for token in ref[2:].split("/"):
        found = found[token.replace("~1", "/").replace("~0", "~")]
    return found


def _refs(value: Any):
    if isinstance(value, dict):
        if isinstance(value.get("$ref"), str):
            yield value["$ref"]
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


# Servers


def test_the_servers_name_the_host_and_virtual_host_but_never_the_credentials(settings):
    document = _document_on(settings, f"amqp://platform:{PASSWORD}@rabbit.internal:5672/shop")

    assert document["servers"] == {"rabbitmq": {
        "host": "rabbit.internal:5672", "protocol": "amqp", "title": "RabbitMQ", "pathname": "/shop",
        "description": "RabbitMQ, virtual host 'shop'.",
    }}
    assert PASSWORD not in json.dumps(document) and "platform:" not in json.dumps(document["servers"])


def test_a_failover_url_is_one_server_per_host(settings):
    document = _document_on(settings, ";".join(
        f"amqp://platform:{PASSWORD}@node{n}.internal:5672//" for n in (1, 2, 3)))

    servers = document["servers"]
    assert list(servers) == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    assert [s["host"] for s in servers.values()] == [f"node{n}.internal:5672" for n in (1, 2, 3)]
    assert "virtual host '/'" in servers["rabbitmq-2"]["description"]
    assert PASSWORD not in json.dumps(document)


def test_a_redis_server_names_its_database_and_never_its_password(settings):
    document = _document_on(settings, f"redis://:{PASSWORD}@cache.internal:6380/3")

    assert document["servers"]["redis"] | {"description": ""} == {
        "host": "cache.internal:6380", "protocol": "redis", "title": "Redis", "pathname": "/3", "description": "",
    }
    assert PASSWORD not in json.dumps(document)


# Channels


def test_every_exchange_and_queue_is_a_channel_with_its_amqp_binding_on_rabbitmq(settings):
    on_broker(settings, "rabbitmq")
    topology = Topology()

    channels = asyncapi.document()["channels"]

    for exchange in topology.exchanges():
        amqp = channels[f"exchange.{exchange.name}"]["bindings"]["amqp"]
        assert (amqp["is"], amqp["exchange"]["name"], amqp["exchange"]["type"]) == (
            "routingKey", exchange.name, exchange.type)
    for queue in topology.queues():
        channel = channels[f"queue.{queue.name}"]
        assert channel["address"] == queue.name
        assert channel["bindings"]["amqp"]["is"] == "queue"
        assert channel["bindings"]["amqp"]["queue"]["durable"] is True
    assert len(channels) == len(topology.exchanges()) + len(topology.queues())
    assert channels["exchange.events.catalog.ProductPriceChanged"]["bindings"]["amqp"]["exchange"]["type"] == "fanout"
    assert channels["exchange.dead-letters"]["address"] == channels["queue.dead-letters"]["address"]


def test_what_the_amqp_binding_cannot_say_is_an_extension(settings):
    on_broker(settings, "rabbitmq")
    settings.BUS_DELIVERY_LIMIT = 7

    channels = asyncapi.document()["channels"]

    ordering_commands = channels["queue.ordering.commands"]
    assert ordering_commands["x-queue-arguments"]["x-queue-type"] == "quorum"
    assert ordering_commands["x-queue-arguments"]["x-delivery-limit"] == 7
    assert ordering_commands["x-queue-arguments"]["x-dead-letter-exchange"] == "dead-letters"
    # Its commands, and its retries coming back by its name through ordering's return exchange.
    assert ordering_commands["x-bound-to"] == [
        {"exchange": "commands", "routingKey": command}
        for command in registry.handled_types("ordering", "command")
    ] + [{"exchange": "retried.ordering", "routingKey": "ordering.commands"}]
    assert channels["queue.basket.events.catalog.ProductPriceChanged"]["x-bound-to"] == [
        {"exchange": "events.catalog.ProductPriceChanged", "routingKey": "catalog.ProductPriceChanged"},
        {"exchange": "retried.basket", "routingKey": "basket.events.catalog.ProductPriceChanged"}]


def test_on_redis_the_document_says_how_queues_are_carried_instead_of_claiming_amqp(settings):
    on_broker(settings, "redis")

    document = asyncapi.document()

    assert "amqp" not in json.dumps(document["channels"]) + json.dumps(document["operations"])
    queue = document["channels"]["queue.basket.events.catalog.ProductPriceChanged"]
    assert "Redis stream" in queue["x-carried-as"] and "XREADGROUP" in queue["x-carried-as"]
    assert document["channels"]["exchange.events.catalog.ProductPriceChanged"]["x-exchange-type"] == "direct"
    assert all("x-carried-as" in channel for channel in document["channels"].values())


# Operations


def test_the_owner_sends_each_event_and_each_subscriber_receives_it_on_its_own_queue(settings):
    on_broker(settings, "rabbitmq")

    operations = asyncapi.document()["operations"]

    sent = operations["catalog.send.catalog.ProductPriceChanged"]
    assert (sent["action"], sent["channel"]) == ("send", {"$ref": "#/channels/exchange.events.catalog.ProductPriceChanged"})
    received = operations["ordering.receive.catalog.ProductPriceChanged"]
    assert received["action"] == "receive"
    assert received["channel"] == {"$ref": "#/channels/queue.ordering.events.catalog.ProductPriceChanged"}
    # Version 1 too: it is still read (upcast), and the code before writes it during a deploy.
    assert received["messages"] == [
        {"$ref": "#/channels/queue.ordering.events.catalog.ProductPriceChanged/messages/catalog.ProductPriceChanged"},
        {"$ref": "#/channels/queue.ordering.events.catalog.ProductPriceChanged/messages/catalog.ProductPriceChanged.v1"},
    ]
    assert sent["messages"] == [{"$ref": "#/channels/exchange.events.catalog.ProductPriceChanged"
                                         "/messages/catalog.ProductPriceChanged"}]


def test_an_older_version_still_read_is_a_message_of_its_own_with_the_schema_the_lock_file_keeps():
    document = asyncapi.document()

    older = document["components"]["messages"]["catalog.ProductPriceChanged.v1"]
    assert older["x-version"] == 1 and "still read (upcast to version 2), no longer written" in older["description"]
    schemas = document["components"]["schemas"]
    envelope = schemas["catalog.ProductPriceChanged.v1.envelope"]
    assert envelope["properties"]["version"]["const"] == 1
    assert "currency" not in _resolve(document, envelope["properties"]["data"]["$ref"])["required"]
    current = schemas["catalog.ProductPriceChanged.envelope"]
    assert current["properties"]["version"]["enum"] == [2]
    assert "currency" in _resolve(document, current["properties"]["data"]["$ref"])["required"]


def test_without_a_lock_file_only_the_current_versions_are_described(settings, tmp_path):
    settings.BUS_CONTRACTS_LOCK = tmp_path / "none.json"

    document = asyncapi.document()

    assert "catalog.ProductPriceChanged.v1" not in document["components"]["messages"]
    assert document["components"]["schemas"]["catalog.ProductPriceChanged.envelope"]["properties"]["version"][
        "enum"] == [1, 2]


def test_each_command_is_received_by_its_owner_on_its_command_queue(settings):
    on_broker(settings, "rabbitmq")

    operations = asyncapi.document()["operations"]

    assert operations["ordering.receive.ordering.PlaceOrder"]["channel"] == {"$ref": "#/channels/queue.ordering.commands"}
    sent = operations["send.ordering.PlaceOrder"]
    assert sent["channel"] == {"$ref": "#/channels/exchange.commands"}
    assert sent["x-routing-key"] == "ordering.PlaceOrder"


def test_there_is_one_operation_per_send_and_per_receiving_context():
    operations = asyncapi.document()["operations"]

    receivers = {(h.context, h.message_type) for h in registry.handlers}
    assert len(operations) == len(registry.contracts) + len(receivers)
    for context, message_type in receivers:
        assert f"{context}.receive.{message_type}" in operations


def test_every_operation_uses_a_message_of_its_own_channel_and_every_reference_resolves():
    document = asyncapi.document()

    for operation in document["operations"].values():
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/")
    for ref in _refs(document):
        assert _resolve(document, ref) is not None
    assert "$defs" not in json.dumps(document)


# Messages


def test_each_contract_is_a_message_whose_payload_is_the_task_message_around_its_cloudevent():
    document = asyncapi.document()

    messages = document["components"]["messages"]
    # And each older version still read, whose schema the lock file keeps.
    assert sorted(messages) == sorted([*(c.type_name() for c in registry.contracts), "catalog.ProductPriceChanged.v1"])
    message = messages["catalog.ReserveStock"]
    assert (message["name"], message["contentType"], message["x-version"]) == ("catalog.ReserveStock", "application/json", 1)
    assert message["correlationId"]["location"] == "$message.payload#/1/envelope/correlationid"
    assert message["headers"]["properties"]["task"]["const"] == "catalog.ReserveStock"
    envelope = _resolve(document, message["payload"]["items"][1]["properties"]["envelope"]["$ref"])
    assert set(envelope["properties"]) == set(Envelope.model_fields)
    assert envelope["properties"]["type"]["const"] == "catalog.ReserveStock"
    assert envelope["properties"]["source"]["enum"] == sorted({*registry.contexts_known(), "operator"})
    data = _resolve(document, envelope["properties"]["data"]["$ref"])
    assert data["required"] == ["order_id", "lines"]
    line = _resolve(document, data["properties"]["lines"]["items"]["$ref"])
    assert line["properties"]["quantity"] == {"exclusiveMinimum": 0, "title": "Quantity", "type": "integer"}


def test_the_envelope_in_the_document_accepts_a_real_envelope_and_its_path_finds_the_correlation():
    """What the document says about the wire holds for a message the bus writes."""
    from apps.catalog.messages import ReleaseStock
    from messaging.task_message import for_envelope

    document = asyncapi.document()
    conversation = uuid.uuid4()
    envelope = Envelope(id=uuid.uuid4(), type="catalog.ReleaseStock", kind="command", version=1, source="ordering",
                        time="2026-01-01T00:00:00Z", correlationid=conversation, causationid=uuid.uuid4(),
                        data=ReleaseStock(order_id=uuid.uuid4()).model_dump(mode="json")).to_json_dict()
    body = json.loads(json.dumps(for_envelope(envelope).body))

    schema = {**document["components"]["messages"]["catalog.ReleaseStock"]["payload"],
              "components": document["components"]}
    # AsyncAPI's schema format is a superset of JSON Schema draft 7.
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(body)
    assert body[1]["envelope"]["correlationid"] == str(conversation)


def test_an_event_with_upcasters_lists_every_version_it_reads():
    class PriceNoted(Event):
        """A price was noted.

        Kept for the test.
        """

        __module__ = "apps.catalog.messages"
        version = 3
        sku: str

    PriceNoted.upcaster(from_version=1)(lambda data: data)
    PriceNoted.upcaster(from_version=2)(lambda data: data)

    document = asyncapi.document(Registry(contracts=[PriceNoted]))

    message = document["components"]["messages"]["catalog.PriceNoted"]
    assert (message["x-version"], message["x-readable-versions"]) == (3, [1, 2, 3])
    assert (message["summary"], message["description"].split(" Written")[0]) == ("A price was noted.", "Kept for the test.")
    envelope = document["components"]["schemas"]["catalog.PriceNoted.envelope"]
    assert envelope["properties"]["version"]["enum"] == [1, 2, 3]
    assert envelope["properties"]["source"] == {"type": "string", "const": "catalog",
                                                 "description": asyncapi.ENVELOPE_ATTRIBUTES["source"]}


def test_two_contracts_naming_different_models_alike_keep_both_schemas():
    from pydantic import BaseModel

    def contract(name: str, line_field: str):
        line = type("Line", (BaseModel,), {"__annotations__": {line_field: int}, "__module__": "apps.catalog.messages"})
        return type(name, (Event,), {"__annotations__": {"lines": list[line]}, "__module__": "apps.catalog.messages"})

    first, second = contract("Counted", "count"), contract("Weighed", "grams")

    schemas = asyncapi.document(Registry(contracts=[first, second]))["components"]["schemas"]

    assert schemas["catalog.Line"]["properties"].keys() == {"count"}
    assert schemas["catalog.Weighed.Line"]["properties"].keys() == {"grams"}
    assert schemas["catalog.Weighed"]["properties"]["lines"]["items"]["$ref"] == "#/components/schemas/catalog.Weighed.Line"


def test_a_handler_of_a_type_without_a_contract_leaves_its_queue_without_messages():
    stray = Handler(func=test_a_handler_of_a_type_without_a_contract_leaves_its_queue_without_messages,
                    kind="event", target="nowhere.Gone")
    stray_registry = Registry(contracts=registry.contracts, handlers=[*registry.handlers, stray])

    document = asyncapi.document(stray_registry, brokers.current())

    assert "nowhere.Gone" not in document["components"]["messages"]
    assert all("nowhere.Gone" not in op for op in document["operations"])


# The command


def test_bus_asyncapi_writes_yaml_by_default_and_json_when_asked(settings):
    settings.CELERY_BROKER_URL = f"amqp://platform:{PASSWORD}@localhost:5672/platform"
    as_yaml, as_json = io.StringIO(), io.StringIO()

    call_command("bus_asyncapi", stdout=as_yaml)
    call_command("bus_asyncapi", "--format", "json", stdout=as_json)

    assert yaml.safe_load(as_yaml.getvalue()) == json.loads(as_json.getvalue()) == asyncapi.document()
    assert as_yaml.getvalue().startswith("asyncapi: 3.0.0\n")
    assert PASSWORD not in as_yaml.getvalue() + as_json.getvalue()


def test_bus_asyncapi_writes_to_a_file_and_says_so(tmp_path):
    output, said = tmp_path / "asyncapi.json", io.StringIO()

    call_command("bus_asyncapi", "--format", "json", "--output", str(output), stderr=said)

    assert json.loads(output.read_text()) == asyncapi.document()
    assert said.getvalue().strip() == f"wrote the AsyncAPI 3.0.0 document to {output}"


def test_bus_asyncapi_into_a_missing_folder_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match=r"--output .*/missing/asyncapi.yaml: cannot write it: No such file"):
        call_command("bus_asyncapi", "--output", str(tmp_path / "missing" / "asyncapi.yaml"))
