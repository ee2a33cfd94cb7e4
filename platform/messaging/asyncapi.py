"""The platform's messages as an AsyncAPI 3.0 document, derived from the code: nothing here is typed by hand.

What a team that is not Python needs to send or read the bus's messages: the
broker (``servers``: its hosts, never its credentials), every exchange and queue
(``channels``, with the AMQP 0-9-1 binding on RabbitMQ and, as ``x-``
extensions, what the binding cannot say: queue arguments, the bindings of a
queue, how Redis carries them), who sends and who receives what (``operations``,
named ``<context>.<send|receive>.<message type>``) and every contract as it
travels (``components.messages``): a Celery task message whose body carries the
CloudEvent, whose ``data`` is the contract's JSON Schema.

``python manage.py bus_asyncapi`` writes it; the console shows it as a page.
The official parser (``@asyncapi/parser``) validates it in CI
(``tests/process/test_asyncapi.py``).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

from django.conf import settings
from kombu import Exchange, Queue

from messaging import brokers
from messaging.brokers.base import PERSISTENT, Broker
from messaging.contexts import OPERATOR_SOURCE
from messaging.contract_lock import ContractLockError, read_lock
from messaging.contracts import Envelope, Message
from messaging.registry import Registry, registry as default_registry
from messaging.task_message import CONTENT_ENCODING, CONTENT_TYPE, ENVELOPE_ARGUMENT, EMBED_KEYS
from messaging.topology import COMMANDS_EXCHANGE, Topology, consumer_queue_name, event_exchange_name, queue_bindings

ASYNCAPI_VERSION = "3.0.0"
#: The version of AsyncAPI's ``amqp`` bindings the document uses.
AMQP_BINDING_VERSION = "0.3.0"
#: The AsyncAPI protocol of each broker URL scheme (``messaging.brokers.ADAPTERS``).
PROTOCOLS = {
    "amqp": "amqp", "pyamqp": "amqp", "amqps": "amqps",
    "redis": "redis", "rediss": "redis", "sentinel": "redis",
    # No AsyncAPI protocol names kombu's filesystem transport: the embedded broker is for trying.
    "filesystem": "kombu-filesystem",
}
#: Schemes whose connections are TLS although their AsyncAPI protocol does not say so.
TLS_SCHEMES = {"rediss"}
#: Where, in a message, the conversation's id is: the envelope inside the task message's body.
CORRELATION_ID_LOCATION = f"$message.payload#/1/{ENVELOPE_ARGUMENT}/correlationid"

#: What each envelope attribute holds (docs/reference/envelope.md says the same).
ENVELOPE_ATTRIBUTES = {
    "id": "The message id: one id for all subscribers of an event (CloudEvents, required).",
    "type": "The stable dotted name of the contract, <context>.<ClassName> (CloudEvents, required).",
    "source": "The sending context, or 'operator' for a command sent from a shell (CloudEvents, required).",
    "time": "When the message was written, UTC (CloudEvents).",
    "specversion": "The CloudEvents specification version (CloudEvents, required).",
    "datacontenttype": "The content type of data (CloudEvents).",
    "kind": "command or event (extension).",
    "version": "The contract version data is written in (extension).",
    "correlationid": "The business conversation: the first message's id, inherited by every message it "
                     "causes (extension; read under its former name correlation_id too).",
    "causationid": "The message being handled when this one was sent; absent on the first message of a "
                   "conversation, since CloudEvents attributes have no null (extension; read under its former "
                   "name causation_id too).",
    "traceparent": "The W3C trace context of the span that wrote the message, present while tracing is on "
                   "(CloudEvents distributed-tracing extension): continue the conversation's trace from it.",
    "tracestate": "The W3C tracestate that goes with traceparent, when there is one (distributed tracing).",
    "data": "The contract's fields (the schema of the version written).",
}

WIRE = """\
Every message is a Celery task message (protocol 2) named after its type, published
persistent with content type application/json and encoding utf-8, never compressed:

- the body is JSON, `[args, kwargs, embed]`: `[[], {"envelope": {...}}, {...}]`, and
  `body[1].envelope` is the CloudEvent (JSON event format, specversion 1.0) that any
  CloudEvents SDK parses;
- the header `task` is the message type, the header `id` the message id;
- the AMQP property `correlation_id` is the business conversation (`correlationid`).

A command is published to the `commands` exchange with its type as routing key and reaches
its owner's queue `<context>.commands`; an event is published to its exchange
`events.<type>` and every subscribing context has a queue of its own,
`<context>.events.<type>`, bound to it. A service in another language reads events from a
queue of its own bound the same way. Delivery is at least once: a reader must be
idempotent, keyed on the message id.
"""


def document(registry: Registry = default_registry, broker: Broker | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every contract, exchange, queue and handler of ``registry``
    on ``broker`` (the platform's, ``CELERY_BROKER_URL``, by default)."""
    return _Builder(registry, broker or brokers.current()).document()


def servers(broker: Broker) -> dict[str, dict[str, Any]]:
    """One server per host of the broker's URL (a failover URL, ``;``-separated, names several),
    without user, password or query: the document is for reading, not for connecting."""
    name = re.sub(r"[^a-z0-9]+", "-", broker.label.lower()).strip("-")
    urls = [url.strip() for url in broker.url.split(";") if url.strip()]
    found = {}
    for position, url in enumerate(urls, start=1):
        parts = urllib.parse.urlsplit(url)
        protocol = PROTOCOLS.get(parts.scheme)
        if protocol is None:
            raise ValueError(f"no AsyncAPI protocol for a {parts.scheme}:// broker URL")
        server = {
            "host": parts.netloc.rpartition("@")[2] or "localhost",
            "protocol": protocol,
            "title": broker.label,
        }
        if parts.path:
            server["pathname"] = parts.path
        description = [broker.label + (f", host {position} of {len(urls)} (failover)" if len(urls) > 1 else "")]
        if broker.speaks_amqp:
            description.append(f"virtual host '{amqp_vhost(url)}'")
        if parts.scheme in TLS_SCHEMES:
            description.append("connected with TLS")
        server["description"] = ", ".join(description) + "."
        found[name if len(urls) == 1 else f"{name}-{position}"] = server
    return found


def amqp_vhost(url: str) -> str:
    """The virtual host an AMQP URL names, as kombu reads it: the path after its first slash,
    ``/`` when there is none (``amqp://host//`` is ``/`` too)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:]) or "/"


def exchange_channel_id(name: str) -> str:
    # Exchanges and queues share names (RabbitMQ's dead-letters, its retry.<context>.<ms>ms): one prefix each.
    return f"exchange.{name}"


def queue_channel_id(name: str) -> str:
    return f"queue.{name}"


def operation_id(context: str | None, action: str, message_type: str) -> str:
    """``ordering.receive.catalog.ProductPriceChanged``; a send nobody in particular does
    (any context may send a command) has no context in front."""
    return ".".join(part for part in (context, action, message_type) if part)


class _Builder:
    def __init__(self, registry: Registry, broker: Broker) -> None:
        self.registry = registry
        self.broker = broker
        self.topology = Topology(registry, broker)
        self.vhost = amqp_vhost(broker.url.split(";")[0].strip()) if broker.speaks_amqp else None
        self.schemas: dict[str, Any] = {}
        self.history = _locked_versions()

    def document(self) -> dict[str, Any]:
        messages = {}
        for contract in self._contracts():
            messages[contract.type_name()] = self.message(contract)
            for version, schema in self.older_versions(contract).items():
                messages[version_message_key(contract.type_name(), version)] = self.message(
                    contract, version=version, data=schema)
        components = {"messages": messages, "schemas": self.schemas}
        return {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {
                "title": "Message bus",
                # Changes exactly when a contract, its versions or its schema do.
                "version": f"contracts-{_digest(components)}",
                "description": WIRE,
                "tags": [{"name": context} for context in sorted(self.registry.contexts_known())],
            },
            "defaultContentType": CONTENT_TYPE,
            "servers": servers(self.broker),
            "channels": self.channels(),
            "operations": self.operations(),
            "components": components,
        }

    def _contracts(self) -> list[type[Message]]:
        return sorted(self.registry.contracts, key=lambda contract: contract.type_name())

    def older_versions(self, contract: type[Message]) -> dict[int, dict[str, Any]]:
        """The schema of each older version a consumer still reads, as the contracts' lock
        file keeps it (versions it does not hold are described by the current one only)."""
        locked = self.history.get(contract.type_name(), {})
        return {version: locked[version] for version in contract.readable_versions()[:-1] if version in locked}

    # Channels ---------------------------------------------------------------

    def channels(self) -> dict[str, Any]:
        channels = {exchange_channel_id(e.name): self.exchange_channel(e) for e in self.topology.exchanges()}
        channels |= {queue_channel_id(q.name): self.queue_channel(q) for q in self.topology.queues()}
        return channels

    def exchange_channel(self, exchange: Exchange) -> dict[str, Any]:
        if exchange.name == COMMANDS_EXCHANGE:
            types = [c.type_name() for c in self._contracts() if c.kind == "command"]
            description = "Every command, routed by its type (the routing key) to its owner's command queue."
        else:
            types = [c.type_name() for c in self._contracts()
                     if c.kind == "event" and event_exchange_name(c.type_name()) == exchange.name]
            description = ("An event's exchange: every subscribing context's queue is bound to it and gets "
                           "a copy of each event." if types else self._own_description(exchange.name))
        channel = {"address": exchange.name, "title": f"exchange {exchange.name}", "description": description,
                   "messages": self._message_refs(types)}
        if self.broker.speaks_amqp:
            channel["bindings"] = {"amqp": {
                "is": "routingKey",
                "exchange": {"name": exchange.name, "type": exchange.type, "durable": exchange.durable,
                             "autoDelete": exchange.auto_delete, "vhost": self.vhost},
                "bindingVersion": AMQP_BINDING_VERSION,
            }}
        else:
            channel["x-exchange-type"] = exchange.type
            channel["x-carried-as"] = self.broker.carriage()["exchange"]
        return channel

    def queue_channel(self, queue: Queue) -> dict[str, Any]:
        types = self._types_on_queue(queue.name)
        channel = {
            "address": queue.name,
            "title": f"queue {queue.name}",
            "description": self._queue_description(queue.name, types),
            "messages": self._message_refs(types),
            "x-bound-to": [{"exchange": b.exchange.name, "routingKey": b.routing_key} for b in queue_bindings(queue)],
        }
        if queue.queue_arguments:
            channel["x-queue-arguments"] = dict(queue.queue_arguments)
        if self.broker.speaks_amqp:
            channel["bindings"] = {"amqp": {
                "is": "queue",
                "queue": {"name": queue.name, "durable": queue.durable, "exclusive": queue.exclusive,
                          "autoDelete": queue.auto_delete, "vhost": self.vhost},
                "bindingVersion": AMQP_BINDING_VERSION,
            }}
        else:
            channel["x-carried-as"] = self.broker.carriage()["queue"]
        return channel

    def _types_on_queue(self, queue_name: str) -> list[str]:
        """The message types some context receives on this queue that have a contract."""
        return sorted({
            handler.message_type for handler in self.registry.handlers
            if handler.context and self.registry.contract_for(handler.message_type)
            and consumer_queue_name(handler.context, handler.kind, handler.message_type) == queue_name
        })

    def _queue_description(self, queue_name: str, types: list[str]) -> str:
        if not types:
            return self._own_description(queue_name)
        context = next(h.context for h in self.registry.handlers if h.message_type == types[0] and h.context
                       and consumer_queue_name(h.context, h.kind, h.message_type) == queue_name)
        return f"What {context} receives: consumed by its workers only, competing for each message."

    def _own_description(self, name: str) -> str:
        dead_letters = self.broker.dead_letter_queue()
        if dead_letters is not None and name == dead_letters.name:
            return ("Dead letters: every message a queue gave up on (rejected, over the delivery limit), with "
                    "an x-death header naming the queue and the reason; the relay moves them into the "
                    "dead-letter table, where an operator repairs them.")
        if self.broker.returns_by_name(name):
            return ("A retry of one context waits here until its time-to-live, then goes back through that "
                    "context's return exchange to the one queue it failed on (the routing key it keeps).")
        return ("Where one context's retries go back once their wait is over: each of that context's queues "
                "is bound to it by its own name, and no other context's queue is.")

    def _message_refs(self, types: list[str]) -> dict[str, Any]:
        """Each type's message, and a message per older version still read: during a rolling
        deploy the code before still writes them."""
        return {key: {"$ref": f"#/components/messages/{_pointer(key)}"} for t in types for key in self._keys(t)}

    def _keys(self, message_type: str) -> list[str]:
        contract = self.registry.contract_for(message_type)
        older = self.older_versions(contract) if contract else {}
        return [message_type, *(version_message_key(message_type, version) for version in older)]

    # Operations -------------------------------------------------------------

    def operations(self) -> dict[str, Any]:
        operations: dict[str, Any] = {}
        for contract in self._contracts():
            message_type, owner = contract.type_name(), contract.context()
            if contract.kind == "event":
                operations[operation_id(owner, "send", message_type)] = self._send(
                    message_type, exchange_channel_id(event_exchange_name(message_type)), owner,
                    f"{owner} publishes {message_type} to its exchange.",
                )
            else:
                operations[operation_id(None, "send", message_type)] = self._send(
                    message_type, exchange_channel_id(COMMANDS_EXCHANGE), None,
                    f"Any context of the platform (or an operator, as source '{OPERATOR_SOURCE}') sends "
                    f"{message_type}: the registry knows who receives a command, not who sends it.",
                )
            for context in sorted({h.context for h in self.registry.handlers_for(message_type) if h.context}):
                queue_id = queue_channel_id(consumer_queue_name(context, contract.kind, message_type))
                handlers = [h.name for h in self.registry.handlers_for(message_type, context)]
                operations[operation_id(context, "receive", message_type)] = {
                    "action": "receive",
                    "channel": {"$ref": f"#/channels/{_pointer(queue_id)}"},
                    "title": f"{context} receives {message_type}",
                    "summary": f"Handled by {', '.join(handlers)}.",
                    "tags": [{"name": context}],
                    "messages": [{"$ref": f"#/channels/{_pointer(queue_id)}/messages/{_pointer(key)}"}
                                 for key in self._keys(message_type)],
                    **({"bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}}}
                       if self.broker.speaks_amqp else {}),
                }
        return operations

    def _send(self, message_type: str, channel_id: str, context: str | None, summary: str) -> dict[str, Any]:
        operation = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{_pointer(channel_id)}"},
            "title": f"{context or 'a sender'} sends {message_type}",
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{_pointer(channel_id)}/messages/{_pointer(message_type)}"}],
            # A fanout exchange ignores the key, but a direct one (commands; events on Redis) routes on it.
            "x-routing-key": message_type,
        }
        if context:
            operation["tags"] = [{"name": context}]
        if self.broker.speaks_amqp:
            operation["bindings"] = {"amqp": {"deliveryMode": PERSISTENT, "bindingVersion": AMQP_BINDING_VERSION}}
        return operation

    # Messages ---------------------------------------------------------------

    def message(self, contract: type[Message], *, version: int | None = None,
                data: dict[str, Any] | None = None) -> dict[str, Any]:
        """``contract``'s message, or that of an older ``version`` it still reads, whose ``data``
        schema the lock file keeps."""
        message_type = contract.type_name()
        key = message_type if version is None else version_message_key(message_type, version)
        summary, _, description = inspect.cleandoc(contract.__dict__.get("__doc__") or "").partition("\n")
        self.schemas[key] = self.data_schema(contract.model_json_schema() if data is None else copy.deepcopy(data),
                                             owner=contract.context() if data is None else key,
                                             fallback_owner=message_type)
        self.schemas[f"{key}.envelope"] = self.envelope_schema(contract, version=version)
        versions = contract.readable_versions()
        if version is None:
            about_versions = (f"Written at version {contract.version}; read at versions "
                              f"{', '.join(map(str, versions))} (older ones upcast to the current)."
                              if len(versions) > 1 else f"Version {contract.version}.")
        else:
            about_versions = (f"Version {version}, as the code before version {contract.version} writes it: "
                              f"still read (upcast to version {contract.version}), no longer written.")
        message = {
            "name": key,
            "title": f"{contract.__name__} ({contract.kind} of {contract.context()}, "
                     f"version {contract.version if version is None else version})",
            "summary": summary or f"The {contract.kind} {message_type}.",
            "description": " ".join(part for part in (description.strip().replace("\n", " "), about_versions) if part),
            "contentType": CONTENT_TYPE,
            "tags": [{"name": contract.kind}, {"name": contract.context()}],
            "headers": self.headers_schema(message_type),
            "payload": self.body_schema(key),
            "correlationId": {
                "description": "The business conversation; the AMQP property correlation_id holds it too.",
                "location": CORRELATION_ID_LOCATION,
            },
            "x-version": contract.version if version is None else version,
            "x-readable-versions": versions,
        }
        if self.broker.speaks_amqp:
            message["bindings"] = {"amqp": {"contentEncoding": CONTENT_ENCODING, "messageType": message_type,
                                            "bindingVersion": AMQP_BINDING_VERSION}}
        return message

    def data_schema(self, schema: dict[str, Any], *, owner: str, fallback_owner: str) -> dict[str, Any]:
        """A contract version's JSON Schema (pydantic's, as it validates), its ``$defs`` moved into
        ``components.schemas`` as ``<owner>.<Name>`` (the context's, or an older version's key;
        ``<fallback_owner>.<Name>``, the type's, where two contracts of a context name different
        models alike)."""
        definitions = schema.pop("$defs", {})
        moved = {name: f"{owner}.{name}" for name in definitions}
        if any(self.schemas.get(moved[name], _with_refs_moved(definition, moved)) != _with_refs_moved(definition, moved)
               for name, definition in definitions.items()):
            # All or none of the contract's models renamed, so its references stay consistent.
            moved = {name: f"{fallback_owner}.{name}" for name in definitions}
        for name, definition in definitions.items():
            self.schemas[moved[name]] = _with_refs_moved(definition, moved)
        return _with_refs_moved(schema, moved)

    def envelope_schema(self, contract: type[Message], *, version: int | None = None) -> dict[str, Any]:
        """The CloudEvent carrying ``contract`` (at an older ``version``, if given): the envelope's
        own schema (``Envelope``), each attribute narrowed to what those messages hold."""
        message_type = contract.type_name()
        key = message_type if version is None else version_message_key(message_type, version)
        schema = copy.deepcopy(Envelope.model_json_schema())
        properties = schema["properties"]
        properties["type"] = {"type": "string", "const": message_type}
        properties["kind"] = {"type": "string", "const": contract.kind}
        if version is None:
            # The versions with no message of their own (no schema in the lock file) are told here.
            undescribed = [v for v in contract.readable_versions() if v not in self.older_versions(contract)]
            properties["version"] = {"type": "integer", "enum": undescribed}
        else:
            properties["version"] = {"type": "integer", "const": version}
        if contract.kind == "event":
            properties["source"] = {"type": "string", "const": contract.context()}
        else:
            properties["source"] = {"type": "string",
                                    "enum": sorted({*self.registry.contexts_known(), OPERATOR_SOURCE})}
        # Absent rather than null (Envelope.to_json_dict): CloudEvents attributes have no null.
        properties["causationid"] = {"type": "string", "format": "uuid"}
        properties["traceparent"] = {"type": "string"}
        properties["tracestate"] = {"type": "string"}
        properties["data"] = {"$ref": f"#/components/schemas/{_pointer(key)}"}
        for name, description in ENVELOPE_ATTRIBUTES.items():
            properties[name] = {**{k: v for k, v in properties[name].items() if k != "title"},
                                "description": description}
        # CloudEvents requires specversion; Envelope reads it as 1.0 when absent, but writes it always.
        schema["required"] = [*schema["required"], "specversion"]
        return {**schema, "title": f"{key} envelope",
                "description": f"The CloudEvent of {message_type}"
                               f"{'' if version is None else f' at version {version}'} (JSON event format)."}

    def body_schema(self, message_type: str) -> dict[str, Any]:
        """The task message's body, ``[args, kwargs, embed]``, as a JSON Schema tuple."""
        return {
            "type": "array",
            "description": "A Celery protocol-2 task message body: [args, kwargs, embed]; "
                           "kwargs.envelope is the CloudEvent.",
            "items": [
                {"type": "array", "maxItems": 0, "description": "Positional arguments: none."},
                {
                    "type": "object",
                    "description": "Keyword arguments: the envelope alone.",
                    "properties": {ENVELOPE_ARGUMENT: {
                        "$ref": f"#/components/schemas/{_pointer(message_type + '.envelope')}"}},
                    "required": [ENVELOPE_ARGUMENT],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "description": "Celery's callbacks, errbacks, chain and chord: the bus sends none.",
                    "properties": {key: {"type": "null"} for key in sorted(EMBED_KEYS)},
                    "additionalProperties": False,
                },
            ],
            "minItems": 3,
            "additionalItems": False,
        }

    def headers_schema(self, message_type: str) -> dict[str, Any]:
        """The headers a reader needs; Celery's other protocol-2 headers travel too."""
        headers = {
            "type": "object",
            "description": "Celery's protocol-2 task headers, and the broker's own (x-death, x-delivery-count). "
                           "Besides those named here Celery's others travel too (lang, root_id, origin, "
                           "argsrepr, kwargsrepr, ignore_result ...): a reader may ignore them.",
            "properties": {
                "task": {"type": "string", "const": message_type, "description": "The message type."},
                "id": {"type": "string", "format": "uuid", "description": "The message id (the envelope's id)."},
                "retries": {"type": "integer", "minimum": 0, "description": "Attempts before this one."},
            },
            "required": ["task", "id"],
        }
        if self.broker.retries_wait_in_worker:
            headers["properties"]["eta"] = {
                "type": "string", "format": "date-time",
                "description": "A retry's time to run: on this broker a retry waits in the worker.",
            }
        return headers


def version_message_key(message_type: str, version: int) -> str:
    """The message (and data schema) of an older version still read: ``<type>.v<N>``."""
    return f"{message_type}.v{version}"


def _locked_versions() -> dict[str, dict[int, dict[str, Any]]]:
    """Every contract version's schema the lock file keeps (``BUS_CONTRACTS_LOCK``), by type;
    none without a lock file (a project that keeps none describes current versions only)."""
    try:
        lock = read_lock(Path(settings.BUS_CONTRACTS_LOCK))
    except ContractLockError:
        return {}
    return {message_type: dict(locked.versions) for message_type, locked in lock.contracts.items()}


def _with_refs_moved(schema: Any, moved: dict[str, str]) -> Any:
    """``schema`` with each ``#/$defs/<name>`` reference pointing at its ``components.schemas`` key."""
    if isinstance(schema, dict):
        result = {key: _with_refs_moved(value, moved) for key, value in schema.items()}
        ref = result.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            result["$ref"] = f"#/components/schemas/{_pointer(moved.get(ref.removeprefix('#/$defs/'), ref))}"
        return result
    if isinstance(schema, list):
        return [_with_refs_moved(item, moved) for item in schema]
    return schema


def _pointer(key: str) -> str:
    """``key`` as one token of a JSON pointer (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]
