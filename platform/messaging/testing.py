"""An in-memory bus to test a context's handlers and flows with, in one process.

Everything of the bus runs but the broker and the processes: a service writes
its messages to the outbox, contracts are validated, the inbox makes a
redelivered message change nothing, a failing handler is retried and then
becomes a dead letter. ``TestBus.run_until_quiet()`` does what the relay and
every context's worker do, synchronously: it takes the due outbox rows in order,
puts each message in the queue of every context it reaches (the owner of a
command, each subscriber of an event, the one consumer of a dead letter's
retry), and has each context handle its queue, first in first out, until no
message is left anywhere. Retries do not wait: a delivery whose handler raised
goes to the back of its queue, up to ``BUS_MAX_RETRIES`` times. A pytest
fixture, ``bus``, gives a test one on its test database::

    # conftest.py
    pytest_plugins = ["messaging.testing"]

    # tests/test_shipping.py
    def test_a_paid_order_is_shipped_once(bus):
        paid = bus.publish(OrderPaid(order_id=ORDER), source="ordering")
        bus.run_until_quiet()
        assert Shipment.objects.filter(order_id=ORDER).count() == 1

        bus.deliver_again(paid["id"])      # the broker delivers it once more
        assert Shipment.objects.filter(order_id=ORDER).count() == 1
        assert bus.dead_letters() == []

What a test reads back: ``sent()`` (every message written to the outbox, in
order), ``handled()`` and ``deliveries`` (each delivery and how it ended),
``dead_letters()``. ``stopped(context)`` keeps a context's worker down: its
messages wait in its queue, in order, until it is back.

Order: this bus delivers in publish order, one queue per context. The real one
does not promise that across message types (each has its queue) nor within a
queue once a worker runs several processes: a handler must not depend on order,
and ``deliver()`` is how a test hands messages over in another one. A command
no context handles fails the run, as the relay refuses to publish it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import uuid
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from messaging.contexts import OPERATOR_SOURCE
from messaging.contracts import Command, Event
from messaging.delivery import HandlerFailedError, consume
from messaging.models import DeadLetter, OutboxMessage
from messaging.outbox import Outbox
from messaging.registry import registry

try:
    import pytest
except ImportError:  # a production image has no test tools; the bus needs none of them
    pytest = None

#: How a delivery ended.
HANDLED, DUPLICATE, RETRIED, DEAD_LETTERED = "handled", "duplicate", "retried", "dead_lettered"


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One message handed to one context, and how that ended."""

    context: str
    envelope: dict[str, Any]
    #: 1 for the first delivery of a message to this context, then one more per retry.
    attempt: int
    #: ``handled`` (every handler ran), ``duplicate`` (the inbox had it: nothing ran),
    #: ``retried`` (a handler raised: it goes round again) or ``dead_lettered``.
    outcome: str
    #: What the bus's ``consume`` reported (handlers run, duplicates, the dead letter);
    #: for a retried delivery, the handler's exception.
    report: dict[str, Any]

    @property
    def message_type(self) -> str:
        return self.envelope.get("type", "")

    @property
    def message_id(self) -> str:
        return self.envelope.get("id", "")


class TestBus:
    """The broker and every context's worker, in this process (see the module's docstring)."""

    __test__ = False  # a helper, not a test class pytest should collect

    def __init__(self, *, max_rounds: int = 100) -> None:
        #: Rounds (publish what is due, then handle every queue) before a test is told of a message loop.
        self.max_rounds = max_rounds
        #: Each delivery so far, in the order it happened.
        self.deliveries: list[Delivery] = []
        self._queues: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._stopped: set[str] = set()

    # Sending, as a context or as an operator.

    def send(self, command: Command, *, source: str = OPERATOR_SOURCE, correlation_id: uuid.UUID | None = None,
             deliver_at: datetime.datetime | None = None) -> dict[str, Any]:
        """Write ``command`` to the outbox as ``source`` (a context's label, or the operator) would;
        returns its envelope. Nothing is delivered before ``run_until_quiet()``."""
        with transaction.atomic():
            envelope = Outbox.for_context(source).send(command, correlation_id=correlation_id, deliver_at=deliver_at)
        return envelope.to_json_dict()

    def publish(self, event: Event, *, source: str | None = None, correlation_id: uuid.UUID | None = None,
                deliver_at: datetime.datetime | None = None) -> dict[str, Any]:
        """Write ``event`` to the outbox as its owning context (or ``source``) would; returns its envelope."""
        with transaction.atomic():
            envelope = Outbox.for_context(source or type(event).context()).publish(
                event, correlation_id=correlation_id, deliver_at=deliver_at
            )
        return envelope.to_json_dict()

    # Running.

    def run_until_quiet(self, *, at: datetime.datetime | None = None,
                        withholding: tuple[str, ...] = ()) -> list[Delivery]:
        """Publish and handle until nothing is due in the outbox and every running context's
        queue is empty; returns the deliveries this made.

        ``at``: as if the clock read that (scheduled messages due by then go out).
        ``withholding``: messages of these types are taken off the bus undelivered,
        as a broker that lost or dead-lettered them would.
        """
        first = len(self.deliveries)
        for _ in range(self.max_rounds):
            for row in self._take_due_rows(at):
                if row.message_type in withholding:
                    continue
                destinations = _destinations(row)
                if not destinations and (row.kind == "command" or row.redeliver_to):
                    # The relay keeps such a row unpublished, with the error; an event with no
                    # subscriber is published to no one, as on the broker.
                    raise AssertionError(f"no context handles {row.message_type}: the relay would refuse it")
                for context in destinations:
                    self._queues[context].append((row.envelope, 1))
            running = [context for context, queue in sorted(self._queues.items())
                       if queue and context not in self._stopped]
            if not running:
                return self.deliveries[first:]
            for context in running:
                queue = self._queues[context]
                for _ in range(len(queue)):  # a retry goes round at the next turn, after what waited
                    envelope, attempt = queue.popleft()
                    self._deliver(envelope, context, attempt)
        raise AssertionError(f"messages were still flowing after {self.max_rounds} rounds: a message loop?")

    def deliver(self, envelope: dict[str, Any], *, context: str | None = None) -> list[Delivery]:
        """Hand one message to ``context`` (or to every context it reaches) now, out of turn:
        late, early, or in another order than it was published."""
        contexts = [context] if context else receiving_contexts(envelope["type"])
        return [self._deliver(envelope, each, 1) for each in contexts]

    def deliver_again(self, message_id: uuid.UUID | str, *, context: str | None = None) -> list[Delivery]:
        """Deliver a message written to the outbox once more, as a broker redelivers at least once."""
        row = OutboxMessage.objects.filter(message_id=message_id).order_by("id").first()
        if row is None:
            raise LookupError(f"no message {message_id} was written to the outbox")
        return self.deliver(row.envelope, context=context)

    @contextlib.contextmanager
    def stopped(self, context: str) -> Iterator[TestBus]:
        """``context``'s worker is down: its messages wait in its queue until it is back."""
        self._stopped.add(context)
        try:
            yield self
        finally:
            self._stopped.discard(context)

    # Reading back.

    def sent(self, message_type: str | None = None) -> list[dict[str, Any]]:
        """Every message written to the outbox (of ``message_type``), in the order written."""
        rows = OutboxMessage.objects.order_by("id")
        if message_type:
            rows = rows.filter(message_type=message_type)
        return [row.envelope for row in rows]

    def handled(self, *, context: str | None = None, message_type: str | None = None) -> list[Delivery]:
        """The deliveries whose handlers ran (duplicates, retries and dead letters left out)."""
        return [delivery for delivery in self.deliveries if delivery.outcome == HANDLED
                and context in (None, delivery.context) and message_type in (None, delivery.message_type)]

    def dead_letters(self, *, context: str | None = None) -> list[DeadLetter]:
        """The dead letters recorded, oldest first."""
        rows = DeadLetter.objects.order_by("id")
        return list(rows.filter(context=context) if context else rows)

    # How.

    def _deliver(self, envelope: dict[str, Any], context: str, attempt: int) -> Delivery:
        try:
            report = consume(envelope, context=context, attempts=attempt,
                             last_attempt=attempt > settings.BUS_MAX_RETRIES)
        except HandlerFailedError as failure:
            self._queues[context].append((envelope, attempt + 1))
            delivery = Delivery(context, envelope, attempt, RETRIED, {"context": context, "error": failure.__cause__})
        else:
            delivery = Delivery(context, envelope, attempt, _outcome(report), report)
        self.deliveries.append(delivery)
        return delivery

    @staticmethod
    def _take_due_rows(at: datetime.datetime | None) -> list[OutboxMessage]:
        # Marked published at once, as the relay does once the broker has them.
        rows = list(OutboxMessage.objects.due(at=at).order_by("available_at", "id"))
        OutboxMessage.objects.filter(id__in=[row.id for row in rows]).update(published_at=timezone.now())
        return rows


def receiving_contexts(message_type: str) -> list[str]:
    """The contexts a message reaches: the owner of a command, every subscriber of an event."""
    return sorted({handler.context for handler in registry.handlers_for(message_type)})


def _destinations(row: OutboxMessage) -> list[str]:
    # A dead letter's retry goes to its one consumer; anything else where the topology routes it.
    return [row.redeliver_to] if row.redeliver_to else receiving_contexts(row.message_type)


def _outcome(report: dict[str, Any]) -> str:
    if report.get("dead_lettered"):
        return DEAD_LETTERED
    return HANDLED if report.get("handled") else DUPLICATE


if pytest is not None:

    @pytest.fixture
    def bus(db) -> TestBus:
        """An in-memory bus on the test database (``pytest_plugins = ["messaging.testing"]``)."""
        return TestBus()
