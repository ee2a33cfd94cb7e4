"""The broker's in-memory twin, for fast tests of whole flows in one process.

``deliver_all()`` does what the relay and the workers do, synchronously:
takes due outbox rows in order, marks them published, and hands each message
to the contexts the topology would route it to, until nothing due is left.
``deliver_all(at=...)`` does it as if the clock read ``at``, for scheduled
messages; ``deliver_all(withholding=[type])`` takes messages of that type off
the bus undelivered, as a broker that dead-lettered them; ``deliver()`` hands
one over late.
"""

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


def deliver_all(
    max_rounds: int = 100, *, at: datetime.datetime | None = None, withholding: tuple[str, ...] = ()
) -> list[dict]:
    """Deliver until nothing due is left in the outbox; returns what each consume() reported."""
    reports = []
    for _ in range(max_rounds):
        rows = list(OutboxMessage.objects.due(at=at).order_by("available_at", "id"))
        if not rows:
            return reports
        for row in rows:
            OutboxMessage.objects.filter(id=row.id).update(published_at=timezone.now())
            if row.message_type in withholding:
                continue
            if row.redeliver_to:  # a dead letter's retry: its one consumer only
                reports.append(consume(row.envelope, context=row.redeliver_to))
            else:
                reports += deliver(row.envelope)
    raise AssertionError(f"the outbox still had due rows after {max_rounds} rounds: a message loop?")
