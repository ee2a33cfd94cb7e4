"""What every broker adapter offers the bus, and what they share.

An adapter (``messaging.brokers.rabbitmq``, ``.redis``, ``.embedded``) says how
its broker carries the bus: the kombu transport and its options, the exchange
type that gives each subscriber its own copy of an event, the arguments of a
context's queue, the queues the broker itself needs (dead letters, retries),
where a retry waits, how a batch is published and confirmed, and how many
messages a queue holds. The relay, the tasks and the worker ask the adapter
(``messaging.brokers.current()``) and never name a broker.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from celery import current_app
from django.conf import settings
from kombu import Connection, Exchange, Queue
from kombu.utils.url import maybe_sanitize_url

from messaging import task_message
from messaging.topology_plan import TopologyEditor, TopologyPlanError

#: The default exchange: routes a message to the queue named by its routing key.
DEFAULT_EXCHANGE = ""
DEAD_LETTER_QUEUE = "dead-letters"


class PublishRefusedError(Exception):
    """The broker refused a message, or had no queue for it: it does not have it."""


class ConfirmTimeoutError(TimeoutError):
    """The broker did not confirm every message of a batch in time."""


def retry_ceiling(retries: int) -> float:
    """Longest wait, in seconds, before attempt ``retries + 2``: doubling, capped."""
    return min(settings.BUS_RETRY_BACKOFF_MAX, settings.BUS_RETRY_BACKOFF * 2**retries)


@dataclasses.dataclass(frozen=True)
class Route:
    """Where a message is published: an exchange and a routing key."""

    exchange: Exchange | str
    routing_key: str


@dataclasses.dataclass(frozen=True)
class RetryRoute:
    """Where a retry goes, and how it waits: in a broker queue until its TTL
    (``expiration``) or in the worker until its ``countdown`` (seconds)."""

    route: Route
    expiration: float | None = None
    countdown: float | None = None

    @property
    def delay(self) -> float:
        """Seconds the retry waits, wherever it waits."""
        return self.expiration if self.expiration is not None else self.countdown


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One message to publish: its envelope and where it goes."""

    #: The envelope, or as the outbox stores it (JSON text): the relay's, put on the
    #: broker as it is by the adapters that can (``Publisher.wire``).
    envelope: dict[str, Any] | task_message.StoredEnvelope
    exchange: Exchange | str
    routing_key: str
    retries: int = 0
    #: Seconds the broker holds it in a retry queue before it expires back (RabbitMQ).
    expiration: float | None = None
    #: Seconds the worker holds it before running it (a Celery countdown).
    countdown: float | None = None

    @property
    def message_id(self) -> str:
        envelope = self.envelope
        return envelope.id if isinstance(envelope, task_message.StoredEnvelope) else str(envelope["id"])

    @property
    def exchange_name(self) -> str:
        return self.exchange.name if isinstance(self.exchange, Exchange) else self.exchange


#: AMQP delivery mode 2: the broker writes the message to disk.
PERSISTENT = 2


def publish_envelope(
    producer,
    envelope: dict[str, Any],
    *,
    exchange: Exchange | str,
    routing_key: str,
    retries: int = 0,
    expiration: float | None = None,
    countdown: float | None = None,
    mandatory: bool = False,
):
    """Put one envelope on the broker (no waiting: an adapter's publisher confirms).

    ``mandatory`` asks RabbitMQ to return the message if no queue is bound to
    its route; whoever sets it must handle the channel's ``basic_return``.
    Returns what the transport's publish returns; raises whatever it raises.
    """
    if isinstance(envelope, task_message.StoredEnvelope):
        envelope = envelope.as_dict()
    message = task_message.for_envelope(envelope, retries=retries, countdown=countdown)
    return producer.publish(
        message.body,
        exchange=exchange,
        routing_key=routing_key,
        headers=message.headers,
        serializer="json",
        delivery_mode=PERSISTENT,
        retry=False,
        mandatory=mandatory,
        expiration=expiration,
        **message.properties,
    )


def publish_outgoing(producer, message: Outgoing, *, mandatory: bool = False):
    """``publish_envelope`` for one ``Outgoing``."""
    return publish_envelope(
        producer, message.envelope, exchange=message.exchange, routing_key=message.routing_key,
        retries=message.retries, expiration=message.expiration, countdown=message.countdown, mandatory=mandatory,
    )


@dataclasses.dataclass
class BatchOutcome:
    """What became of a batch, by position in it."""

    #: Positions the broker confirmed: safe to mark as published.
    confirmed: list[int] = dataclasses.field(default_factory=list)
    #: Positions the broker refused (nacked).
    refused: list[int] = dataclasses.field(default_factory=list)
    #: Positions no queue is bound to: the broker has them nowhere.
    unroutable: list[int] = dataclasses.field(default_factory=list)
    #: Why the rest is unconfirmed (connection lost, confirm timeout), if anything is.
    error: Exception | None = None
    #: Seconds spent waiting for the broker's confirms, after publishing; None where the
    #: broker has each message as its publish returns (no confirms to wait for).
    confirm_wait: float | None = None

    def refusal(self, batch_size: int) -> PublishRefusedError | None:
        problems = []
        if self.refused:
            problems.append(f"refused {len(self.refused)} of {batch_size} messages")
        if self.unroutable:
            problems.append(f"returned {len(self.unroutable)} of {batch_size} messages as unroutable "
                            "(no queue bound to their route)")
        return PublishRefusedError(f"the broker {' and '.join(problems)}") if problems else None


class Publisher:
    """Publishes batches on one channel; ``publish`` reports what the broker has."""

    def __init__(self, channel, *, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout
        self.producer = current_app.amqp.Producer(channel, auto_declare=False)
        #: The task message of each message type, prepared once (``wire``).
        self._templates: dict[str, task_message.TaskMessageTemplate] = {}

    def wire(self, message: Outgoing) -> task_message.WireMessage | None:
        """The task message of a stored envelope first sent (the relay's), serialised
        around the envelope's text; None for any other (it goes through ``publish_outgoing``)."""
        envelope = message.envelope
        if (not isinstance(envelope, task_message.StoredEnvelope) or message.retries
                or message.expiration is not None or message.countdown is not None):
            return None
        template = self._templates.get(envelope.type)
        if template is None:
            template = self._templates[envelope.type] = task_message.TaskMessageTemplate(envelope.type)
        return template.fill(envelope)

    def publish(self, messages: list[Outgoing]) -> BatchOutcome:
        raise NotImplementedError

    def publish_all(self, messages: list[Outgoing]) -> None:
        """Publish ``messages``; raise unless the broker has every one."""
        outcome = self.publish(messages)
        if outcome.error is not None:
            raise outcome.error
        if refusal := outcome.refusal(len(messages)):
            raise refusal


class ReplyConfirmedPublisher(Publisher):
    """For a broker that has a message once its publish returns, with no confirms to
    wait for: Redis answers each command (a batch goes as one pipeline, answered
    together), the filesystem broker has written the file.

    The transport's publish returns the queues it delivered to, where it says
    (the Redis adapter's does): none means the message is unroutable. After an
    error nothing of the batch counts as confirmed: a pipeline does not say how
    far it got, and sending a message twice is safe where losing one is not.
    """

    def publish(self, messages: list[Outgoing]) -> BatchOutcome:
        outcome = BatchOutcome()
        routed: list[int] = []
        unroutable: list[int] = []
        try:
            with self.producer.batch(max_size=max(1, len(messages))):
                for position, message in enumerate(messages):
                    queues = publish_outgoing(self.producer, message)
                    (unroutable if queues == [] else routed).append(position)
        except Exception as exc:
            outcome.error = exc
            return outcome
        outcome.confirmed, outcome.unroutable = routed, unroutable
        return outcome


def failover_addresses(url: str) -> list[str]:
    """The nodes of a broker URL, each a URL of its own: kombu's failover form names several,
    separated by ``;`` (``amqp://u:p@h1/v;amqp://u:p@h2/v``)."""
    return [address.strip() for address in url.split(";") if address.strip()]


def masked_url(url: str) -> str:
    """``url`` with every node's password masked; kombu's ``maybe_sanitize_url`` masks only
    the first node's of a failover URL, and prints the others' as they are."""
    return ";".join(maybe_sanitize_url(address) for address in failover_addresses(url))


class Broker:
    """One broker as the bus uses it. Subclasses set what differs."""

    #: Shown to people: "RabbitMQ", "Redis", "embedded filesystem broker".
    label = ""
    #: ``messaging.system`` of OpenTelemetry's semantic conventions (``messaging.tracing``).
    messaging_system = ""
    #: kombu transport for ``Connection(transport=...)``; None: the URL's scheme names it.
    transport: str | None = None
    #: The exchange type that copies an event into every subscriber's queue.
    event_exchange_type = "fanout"
    #: A message comes back after a delivery limit's worth of deaths, then is a dead letter.
    has_delivery_limit = True
    #: A message held by a worker whose whole process was killed comes back.
    keeps_a_killed_workers_message = True
    #: A retry waits in the worker (a Celery countdown, so the message carries an eta).
    retries_wait_in_worker = True
    #: Its exchanges and queues are AMQP 0-9-1 ones, which AsyncAPI's ``amqp`` bindings
    #: describe; on any other broker ``carriage()`` says how they are carried.
    speaks_amqp = False

    def __init__(self, url: str, *, data_dir=None) -> None:
        self.url = url
        self.data_dir = data_dir

    #: For trying the platform only: ``run_platform`` says so loudly.
    for_trying_only = False

    def prepare(self) -> None:
        """Make what the transport needs and will not make itself (once Django is ready)."""

    def forget_leftovers(self) -> None:
        """Drop what an earlier run left that nobody will consume (before ``run_platform`` starts)."""

    def describe(self) -> str:
        """Where the broker is, for people (no password): every node of a failover URL."""
        return ", ".join(address.split("@")[-1] for address in failover_addresses(self.url))

    def redelivery_wait(self) -> float:
        """Seconds a message taken by a worker that died may wait before it comes back
        (0: as soon as the broker sees the worker gone)."""
        return 0.0

    def configuration_problems(self) -> list:
        """Django check messages for settings this broker cannot work with (``manage.py check``)."""
        return []

    def transport_options(self) -> dict:
        """kombu transport options (``CELERY_BROKER_TRANSPORT_OPTIONS``)."""
        return {}

    def connection(self, **transport_options) -> Connection:
        """A new connection to this broker, with the bus's transport and options."""
        return Connection(self.url, transport=self.transport,
                          transport_options={**self.transport_options(), **transport_options})

    def carriage(self) -> dict[str, str]:
        """How the transport carries an ``exchange`` and a ``queue`` where they are no AMQP 0-9-1
        objects, for a reader without kombu (the AsyncAPI document says it): empty on AMQP."""
        return {}

    def queue_arguments(self) -> dict | None:
        """Arguments of every context queue (RabbitMQ's queue type, delivery limit, ...)."""
        return None

    def retry_exchange_pattern(self, context: str) -> str | None:
        """A regular expression matching every exchange ``context``'s retries may wait behind,
        whatever the retry settings (``bus_permissions`` lets its workers publish there);
        None: retries need none."""
        return None

    def own_exchanges(self, contexts=()) -> list[Exchange]:
        """Exchanges the broker needs beside the registry's (dead letters, retries of ``contexts``)."""
        return []

    def context_queue_bindings(self, context: str, queue_name: str) -> list:
        """Bindings a queue of ``context`` needs beside its command or event exchange's."""
        return []

    def returns_by_name(self, queue: str) -> bool:
        """Whether what waits in ``queue`` goes back to another queue by that queue's name
        (RabbitMQ's retry queues), not through a binding."""
        return False

    def own_queues(self, contexts=()) -> list[Queue]:
        """Queues the broker needs beside the contexts' (dead letters, retries of ``contexts``)."""
        return []

    def owns_queue(self, name: str) -> bool:
        """Whether a queue found on the broker is one this adapter makes (``own_queues``),
        including one an earlier setting made (a retry delay since changed)."""
        return any(queue.name == name for queue in self.own_queues())

    def owns_exchange(self, name: str) -> bool:
        """Whether an exchange found on the broker is one this adapter makes (``own_exchanges``)."""
        return any(exchange.name == name for exchange in self.own_exchanges())

    def topology_editor(self, connection: Connection) -> TopologyEditor:
        """Reads and changes the topology on ``connection``'s broker (``bus_topology --plan``/``--apply``)."""
        raise TopologyPlanError(f"bus_topology --plan and --apply are not supported on the {self.label or 'broker'}")

    def management_api(self):
        """Its HTTP management API, which makes users and sets their permissions
        (``bus_permissions --apply``); None where it has no per-queue permissions to set."""
        return None

    def dead_letter_queue(self) -> Queue | None:
        """Where the broker puts what it dead-letters (delivery limit, rejects), which the
        relay empties into the table; None if it has no such queue."""
        return None

    def retry_route(self, queue_name: str, ceiling: float, delay: float, *, context: str) -> RetryRoute:
        """Where a message that failed on ``queue_name`` (of ``context``) waits ``delay`` seconds,
        then returns to that queue alone (``ceiling`` is the schedule's step). By default the
        worker holds it (a Celery countdown) and it goes straight back to its queue."""
        return RetryRoute(Route(DEFAULT_EXCHANGE, routing_key=queue_name), countdown=delay)

    def publisher(self, channel, *, timeout: float) -> Publisher:
        """Publishes batches on ``channel`` (the publisher's alone) and confirms them."""
        return ReplyConfirmedPublisher(channel, timeout=timeout)

    def queue_depths(self, channel, names: list[str]) -> dict[str, int]:
        """Messages each queue holds for its consumers (a missing queue holds none)."""
        return {name: self._queue_depth(channel, name) for name in names}

    def _queue_depth(self, channel, name: str) -> int:
        return channel.queue_declare(queue=name, passive=True).message_count
