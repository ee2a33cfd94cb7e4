"""Broker objects derived from the registry: nothing here is typed by hand.

- one durable exchange per event type, ``events.<type>``;
- one durable queue per (subscribing context, event type),
  ``<context>.events.<type>``, bound to that exchange: each context gets its
  own copy of every event it subscribes to, and the publisher knows none of them;
- one direct exchange ``commands``; one durable queue per context that owns
  commands, ``<context>.commands``, bound with each command type as routing key;
- whatever the broker needs beside them (RabbitMQ's dead-letter and retry
  queues, Redis's dead-letter queue), and the arguments of every context queue
  (RabbitMQ's quorum type and delivery limit): the broker's adapter says
  (``messaging.brokers``), as it says the event exchange's type (a fanout on
  RabbitMQ; on Redis a direct exchange every subscriber is bound to by the
  type, since a Redis fanout is pub/sub).

Every process declares the whole topology before it publishes or consumes, so
an event published before its subscribers ever ran still reaches their queues;
a process whose broker user may not (least privilege, ``messaging.broker_permissions``)
checks that it exists instead (``declare_where_allowed``). A declaration the broker
refuses for one object (its node is down, its arguments differ from the code's) is
logged and skipped: the others are declared, and publishing goes on for them.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re

from amqp.exceptions import AccessRefused, ChannelError, NotFound, PreconditionFailed
from kombu import Exchange, Queue, binding

from messaging import brokers
from messaging.brokers.base import DEFAULT_EXCHANGE, Broker, RetryRoute, Route, retry_ceiling
from messaging.registry import Registry, registry as default_registry
from messaging.topology_plan import Binding, BrokerTopology, ExchangeState, Plan, QueueState, diff

logger = logging.getLogger(__name__)

COMMANDS_EXCHANGE = "commands"


class TopologyMissingError(Exception):
    """This process's broker user may not declare the topology, and part of it is not there."""

#: Where ``bus_topology --apply`` keeps a queue's messages while it redeclares that queue.
HOLDING_PREFIX = "topology-holding."

#: Names the platform gives (a context is a Python identifier, an event type ``<context>.<Name>``):
#: what matches is the platform's to plan, create and delete; anything else on the broker is
#: left alone (Celery's ``celery.pidbox`` and ``celeryev.*``, other applications').
_CONSUMER_QUEUE_NAME = re.compile(r"[A-Za-z_]\w*\.(commands|events\.[A-Za-z_]\w*\.\w+)")
_EVENT_EXCHANGE_NAME = re.compile(r"events\.[A-Za-z_]\w*\.\w+")


def event_exchange_name(event_type: str) -> str:
    return f"events.{event_type}"


def event_queue_name(context: str, event_type: str) -> str:
    return f"{context}.events.{event_type}"


def command_queue_name(context: str) -> str:
    return f"{context}.commands"


def consumer_queue_name(context: str, kind: str, message_type: str) -> str:
    """The queue on which ``context`` receives messages of ``message_type``."""
    if kind == "command":
        return command_queue_name(context)
    return event_queue_name(context, message_type)


def holding_queue_name(queue_name: str) -> str:
    return f"{HOLDING_PREFIX}{queue_name}"


def held_queue_of(holding_name: str) -> str | None:
    """The queue a holding queue keeps messages for; None for any other name."""
    return holding_name[len(HOLDING_PREFIX):] if holding_name.startswith(HOLDING_PREFIX) else None


def context_of_queue(queue_name: str) -> str:
    """The context a consumer queue belongs to (the inverse of the names above)."""
    return queue_name.split(".", 1)[0]


def queue_bindings(queue: Queue) -> list[binding]:
    """What ``queue`` is bound to: its bindings, or its one exchange and key (none for the
    default exchange, which reaches every queue by its name)."""
    if queue.bindings:
        # kombu keeps them in a set: sorted, every listing of them reads the same.
        return sorted(queue.bindings, key=lambda b: (b.exchange.name, b.routing_key or ""))
    return [binding(queue.exchange, routing_key=queue.routing_key)] if queue.exchange.name else []


class Topology:
    def __init__(self, registry: Registry = default_registry, broker: Broker | None = None) -> None:
        self.registry = registry
        self.broker = broker or brokers.current()

    def route(self, kind: str, message_type: str) -> Route:
        """Where a sender publishes a message; the sender never names a queue."""
        if kind == "command":
            return Route(self.commands_exchange(), routing_key=message_type)
        # A fanout exchange ignores the key, but Celery's router needs one.
        return Route(self.event_exchange(message_type), routing_key=message_type)

    def redelivery_route(self, context: str, kind: str, message_type: str) -> Route:
        """Where a message goes again for one context only (a dead letter's retry):
        that context's queue, through the default exchange, never an event's fanout."""
        return Route(DEFAULT_EXCHANGE, routing_key=consumer_queue_name(context, kind, message_type))

    def retry_route(self, queue_name: str, retries: int) -> RetryRoute:
        """Where a message failed on ``queue_name`` waits before attempt ``retries + 2``,
        and how long (jittered between half the schedule's ceiling and the ceiling);
        then it returns to that queue alone, never to an event's other subscribers."""
        ceiling = retry_ceiling(retries)
        return self.broker.retry_route(queue_name, ceiling, delay=random.uniform(ceiling / 2, ceiling),
                                       context=context_of_queue(queue_name))

    def commands_exchange(self) -> Exchange:
        return Exchange(COMMANDS_EXCHANGE, type="direct", durable=True)

    def event_exchange(self, event_type: str) -> Exchange:
        return Exchange(event_exchange_name(event_type), type=self.broker.event_exchange_type, durable=True)

    def exchanges(self) -> list[Exchange]:
        """Every exchange, including those of events nobody subscribes to yet."""
        exchanges = [self.commands_exchange()]
        exchanges += [
            self.event_exchange(contract.type_name())
            for contract in self.registry.contracts
            if contract.kind == "event"
        ]
        return exchanges + self.broker.own_exchanges(self.registry.contexts())

    def context_queues(self, context: str) -> list[Queue]:
        """The queues one context's worker consumes."""
        queues = []
        command_types = self.registry.handled_types(context, "command")
        if command_types:
            name = command_queue_name(context)
            queues.append(Queue(
                name,
                bindings=[*(binding(self.commands_exchange(), routing_key=t) for t in command_types),
                          *self.broker.context_queue_bindings(context, name)],
                durable=True,
                queue_arguments=self.broker.queue_arguments(),
            ))
        for event_type in self.registry.handled_types(context, "event"):
            name = event_queue_name(context, event_type)
            queues.append(Queue(
                name,
                bindings=[binding(self.event_exchange(event_type), routing_key=event_type),
                          *self.broker.context_queue_bindings(context, name)],
                durable=True,
                queue_arguments=self.broker.queue_arguments(),
            ))
        return queues

    def queues(self) -> list[Queue]:
        """Every consumer queue, then those the broker needs (dead letters, retries)."""
        contexts = self.registry.contexts()
        return [q for context in contexts for q in self.context_queues(context)] + self.broker.own_queues(contexts)

    def declare(self, channel) -> None:
        """Declare every exchange, queue and binding (idempotent)."""
        for exchange in self.exchanges():
            exchange(channel).declare()
        for queue in self.queues():
            queue(channel).declare()

    def declare_where_allowed(self, connection) -> bool:
        """Declare every exchange, queue and binding, each on its own; where this process's
        broker user may not (RabbitMQ refuses the first declaration), check that every
        exchange and queue exists.

        A declaration the broker refuses for another reason (``NOT_FOUND - home node ... is
        down`` for a queue on a stopped node, ``PRECONDITION_FAILED`` for arguments that
        differ from the code's) is logged and skipped: one object the broker cannot declare
        now never stops a process from publishing to or consuming the others. A message that
        then finds its queue missing stays in the outbox, and the relay declares the topology
        again. An error that closes the connection is raised.

        Returns whether it declared them. Raises ``TopologyMissingError`` naming what is
        missing: a user with every right must declare it first (``bus_topology --apply``).
        Bindings cannot be checked over AMQP; whoever declared the queues bound them.
        """
        refused: dict[str, ChannelError] = {}
        channel = connection.channel()
        try:
            for entity in [*self.exchanges(), *self.queues()]:
                try:
                    entity(channel).declare()
                except AccessRefused:
                    break  # this user may not declare: the passive check below says what exists
                except ChannelError as exc:
                    refused[entity.name] = exc
                    _close_quietly(channel)  # the broker closed it with the refusal
                    channel = connection.channel()
            else:
                for name, exc in refused.items():
                    hint = (" `manage.py bus_topology --plan` shows what brings it to the code's."
                            if isinstance(exc, PreconditionFailed) else "")
                    logger.warning("could not declare %s (%s); publishing and consuming go on for the rest, "
                                   "and a message that finds it missing waits in the outbox.%s",
                                   name, _first_line(exc), hint)
                return True
        finally:
            _close_quietly(channel)
        missing = self._missing(connection)
        if missing:
            raise TopologyMissingError(
                f"this broker user may not declare the topology, and {len(missing)} of its exchanges and "
                f"queues are missing ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): "
                "run `manage.py bus_topology --apply` with a user that may (docs/how-to/deploy.md)")
        return False

    def _missing(self, connection) -> list[str]:
        """Exchanges and queues not on the broker, checked with passive declarations."""
        checks = [(e.name, "exchange_declare", {"exchange": e.name, "type": e.type}) for e in self.exchanges()]
        checks += [(q.name, "queue_declare", {"queue": q.name}) for q in self.queues()]
        missing, channel = [], None
        try:
            for name, method, arguments in checks:
                channel = channel if channel is not None and channel.is_open else connection.channel()
                try:
                    getattr(channel, method)(passive=True, **arguments)
                except NotFound:
                    missing.append(name)  # and the channel is closed: the next check opens another
        finally:
            if channel is not None:
                _close_quietly(channel)
        return missing

    def is_own_queue(self, name: str) -> bool:
        """Whether a queue found on the broker is named as the platform names its queues."""
        return bool(_CONSUMER_QUEUE_NAME.fullmatch(name)) or self.broker.owns_queue(name) or name.startswith(HOLDING_PREFIX)

    def is_own_exchange(self, name: str) -> bool:
        """Whether an exchange found on the broker is named as the platform names its exchanges."""
        return name == COMMANDS_EXCHANGE or bool(_EVENT_EXCHANGE_NAME.fullmatch(name)) or self.broker.owns_exchange(name)

    def declared(self) -> BrokerTopology:
        """What ``declare`` makes, as plain data to compare with the broker's (``messaging.topology_plan``)."""
        return BrokerTopology(
            exchanges={e.name: ExchangeState(e.name, e.type, durable=e.durable) for e in self.exchanges()},
            queues={
                q.name: QueueState(
                    q.name,
                    arguments=dict(q.queue_arguments or {}),
                    bindings=frozenset(Binding(b.exchange.name, b.routing_key) for b in queue_bindings(q)),
                    durable=q.durable,
                )
                for q in self.queues()
            },
        )

    def plan(self, actual: BrokerTopology) -> Plan:
        """What brings the broker's ``actual`` topology to this one (``bus_topology --plan``)."""
        return diff(self.declared(), actual, broker=f"{self.broker.label} at {self.broker.describe()}",
                    held_queue_of=held_queue_of, is_own_queue=self.is_own_queue,
                    is_own_exchange=self.is_own_exchange)

    def describe(self) -> dict:
        """The topology as plain data, for ``bus_topology`` and the docs."""
        return {
            "exchanges": [{"name": e.name, "type": e.type, "durable": e.durable} for e in self.exchanges()],
            "queues": [
                {
                    "name": q.name,
                    "durable": q.durable,
                    "bindings": [
                        {"exchange": b.exchange.name, "routing_key": b.routing_key} for b in queue_bindings(q)
                    ],
                }
                for q in self.queues()
            ],
            "contexts": {
                context: {
                    "queues": [q.name for q in self.context_queues(context)],
                    "commands": self.registry.handled_types(context, "command"),
                    "subscriptions": self.registry.handled_types(context, "event"),
                    "handlers": [
                        {"message_type": h.message_type, "kind": h.kind, "handler": h.function, "consumer": h.name}
                        for h in self.registry.handlers if h.context == context
                    ],
                }
                for context in self.registry.contexts()
            },
            "contracts": [
                {"type": c.type_name(), "kind": c.kind, "version": c.version, "owner": c.context()}
                for c in self.registry.contracts
            ],
        }


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _close_quietly(channel) -> None:
    # A channel the broker closed (a refusal) may raise on close: nothing is left to release.
    with contextlib.suppress(Exception):
        channel.close()
