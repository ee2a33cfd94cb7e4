"""The broker's in-memory twin, for fast tests of whole flows in one process.

``deliver_all()`` does what the relay and the workers do, synchronously:
takes unpublished outbox rows in order, marks them published, and hands each
message to the contexts the topology would route it to, until nothing is left.
"""

from django.utils import timezone

from messaging.consumer import consume
from messaging.models import OutboxMessage
from messaging.registry import registry


def receiving_contexts(message_type: str) -> list[str]:
    """The contexts a message reaches: the owner of a command, every subscriber of an event."""
    return sorted({handler.context for handler in registry.handlers_for(message_type)})


def deliver_all(max_rounds: int = 100) -> list[dict]:
    """Deliver until the outbox is empty; returns what each consume() reported."""
    reports = []
    for _ in range(max_rounds):
        rows = list(OutboxMessage.objects.filter(published_at__isnull=True).order_by("id"))
        if not rows:
            return reports
        for row in rows:
            OutboxMessage.objects.filter(id=row.id).update(published_at=timezone.now())
            for context in receiving_contexts(row.message_type):
                reports.append(consume(row.envelope, context=context))
    raise AssertionError(f"the outbox was still not empty after {max_rounds} rounds: a message loop?")
