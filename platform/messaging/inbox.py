"""Idempotent handling: a handler's effects are applied once per message.

A handler may run more than once for one message (the broker redelivers);
its effects are applied once, because the inbox row for (message id,
consumer) is inserted in the same transaction as those effects. A second
delivery finds the row and skips the handler; two concurrent deliveries on
PostgreSQL make the loser's insert wait for the winner, then do nothing.

Recognising a duplicate is one statement (``INSERT ... ON CONFLICT DO
NOTHING RETURNING``), not a failed insert rolled back to a savepoint. A batch
of deliveries handled in one transaction (``messaging.batch_run``) claims all
its rows in one such statement (``claim_all``), then runs what it claimed.
"""

import uuid

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from messaging import causation, tracing
from messaging.contracts import Envelope, Message
from messaging.models import InboxMessage
from messaging.registry import Handler


def handle_once(envelope: Envelope, message: Message, handler: Handler) -> bool:
    """Run ``handler`` unless it already handled this message; True if it ran."""
    with transaction.atomic():
        if not claim_all([(envelope, handler.name)]):
            return False
        run(envelope, message, handler)
    return True


def run(envelope: Envelope, message: Message, handler: Handler) -> None:
    """The handler itself, where the messages it sends name this one as their cause.

    No inbox row and no transaction of its own: the caller claimed the row, in
    the transaction the handler's effects join.
    """
    with causation.handling(envelope, handler.context), tracing.handling(handler.name, handler.function):
        handler.func(message)


def claim_all(claims: list[tuple[Envelope, str]]) -> set[tuple[uuid.UUID, str]]:
    """Insert the inbox rows of (message, consumer) pairs in one statement; the pairs claimed.

    A pair whose row is already there (handled before) is not among them, nor
    the second of a pair given twice.
    """
    now = timezone.now()
    params = []
    for envelope, consumer in claims:
        values = (envelope.id, consumer, envelope.type, envelope.correlationid, now)
        params.extend(field.get_db_prep_save(value, connection) for field, value in zip(_CLAIM_FIELDS, values, strict=True))
    rows = ", ".join([_CLAIM_ROW] * len(claims))
    with connection.cursor() as cursor:
        cursor.execute(f"{_CLAIM_INSERT} VALUES {rows} {_CLAIM_RETURNING}", params)
        return {(_MESSAGE_ID.to_python(message_id), consumer) for message_id, consumer in cursor.fetchall()}


def unclaim(claims: list[tuple[uuid.UUID, str]]) -> None:
    """Delete inbox rows ``claim_all`` inserted in this transaction for deliveries that failed in it."""
    condition = Q()
    for message_id, consumer in claims:
        condition |= Q(message_id=message_id, consumer=consumer)
    InboxMessage.objects.filter(condition).delete()


_CLAIM_FIELDS = [
    InboxMessage._meta.get_field(name)
    for name in ("message_id", "consumer", "message_type", "correlation_id", "handled_at")
]
_MESSAGE_ID = InboxMessage._meta.get_field("message_id")
#: PostgreSQL and SQLite (3.35+) both speak this; the conflict target is the unique constraint.
_CLAIM_INSERT = f"INSERT INTO {InboxMessage._meta.db_table} ({', '.join(f.column for f in _CLAIM_FIELDS)})"
_CLAIM_ROW = f"({', '.join(['%s'] * len(_CLAIM_FIELDS))})"
_CLAIM_RETURNING = (
    f"ON CONFLICT (message_id, consumer) DO NOTHING RETURNING {_MESSAGE_ID.column}, "
    f"{InboxMessage._meta.get_field('consumer').column}"
)
