"""The broker's in-memory twin, for fast tests of whole flows in one process.

``deliver_all()`` does what the relay and the workers do, synchronously:
takes due outbox rows in order, marks them published, and hands each message
to the contexts the topology would route it to, until nothing due is left.
``deliver_all(at=...)`` does it as if the clock read ``at``, for scheduled
messages; ``deliver_all(withholding=[type])`` takes messages of that type off
the bus undelivered, as a broker that dead-lettered them; ``deliver()`` hands
one over late.

``MemoryBus`` is the same twin as the bus the flow contract (``tests.flows``)
drives: one queue per context, so a stopped context's messages wait in order.
"""

import collections
import contextlib
import datetime

from django.utils import timezone

from messaging.delivery import consume
from messaging.models import OutboxMessage
from messaging.registry import registry


def receiving_contexts(message_type: str) -> list[str]:
    """The contexts a message reaches: the owner of a command, every subscriber of an event."""
    return sorted({handler.context for handler in registry.handlers_for(message_type)})


def deliver(envelope: dict) -> list[dict]:
    """Hand one message to every context it reaches; returns what each consume() reported."""
    return [consume(envelope, context=context) for context in receiving_contexts(envelope["type"])]


def _take_due_rows(at: datetime.datetime | None = None) -> list:
    """Mark the due outbox rows published, as the relay does once the broker has them."""
    rows = list(OutboxMessage.objects.due(at=at).order_by("available_at", "id"))
    OutboxMessage.objects.filter(id__in=[row.id for row in rows]).update(published_at=timezone.now())
    return rows


def _destinations(row: OutboxMessage) -> list[str]:
    """A dead letter's retry goes to its one consumer, anything else where the topology routes it."""
    return [row.redeliver_to] if row.redeliver_to else receiving_contexts(row.message_type)


def deliver_all(
    max_rounds: int = 100, *, at: datetime.datetime | None = None, withholding: tuple[str, ...] = ()
) -> list[dict]:
    """Deliver until nothing due is left in the outbox; returns what each consume() reported."""
    reports = []
    for _ in range(max_rounds):
        rows = _take_due_rows(at)
        if not rows:
            return reports
        for row in rows:
            if row.message_type in withholding:
                continue
            reports += [consume(row.envelope, context=context) for context in _destinations(row)]
    raise AssertionError(f"the outbox still had due rows after {max_rounds} rounds: a message loop?")


class MemoryBus:
    """The in-memory bus of the flow contract: a FIFO queue per context, filled from the outbox."""

    def __init__(self, max_rounds: int = 100) -> None:
        self.max_rounds = max_rounds
        self.queues: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.stopped_contexts: set[str] = set()

    def settle(self) -> None:
        """Deliver until nothing is due in the outbox and every running context's queue is empty."""
        for _ in range(self.max_rounds):
            for row in _take_due_rows():
                for context in _destinations(row):
                    self.queues[context].append(row.envelope)
            running = [context for context, queue in self.queues.items() if queue and context not in self.stopped_contexts]
            if not running:
                return
            for context in running:
                while self.queues[context]:
                    consume(self.queues[context].popleft(), context=context)
        raise AssertionError(f"messages were still flowing after {self.max_rounds} rounds: a message loop?")

    @contextlib.contextmanager
    def stopped(self, context: str):
        """``context``'s worker is down: its messages wait in its queue until it is back."""
        self.stopped_contexts.add(context)
        try:
            yield self
        finally:
            self.stopped_contexts.discard(context)
