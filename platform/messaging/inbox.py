"""Idempotent handling: a handler's effects are applied once per message.

A handler may run more than once for one message (the broker redelivers);
its effects are applied once, because the inbox row for (message id,
consumer) is inserted in the same transaction as those effects. A second
delivery finds the row and skips the handler; two concurrent deliveries on
PostgreSQL make the loser's insert wait for the winner, then do nothing.

Recognising a duplicate is one statement (``INSERT ... ON CONFLICT DO
NOTHING RETURNING``), not a failed insert rolled back to a savepoint.
"""

from django.db import connection, transaction
from django.utils import timezone

from messaging import causation
from messaging.contracts import Envelope, Message
from messaging.models import InboxMessage
from messaging.registry import Handler


def handle_once(envelope: Envelope, message: Message, handler: Handler) -> bool:
    """Run ``handler`` unless it already handled this message; True if it ran."""
    with transaction.atomic():
        if not _claim(envelope, handler.name):
            return False
        with causation.handling(envelope, handler.context):
            handler.func(message)
    return True


def _claim(envelope: Envelope, consumer: str) -> bool:
    """Insert the inbox row; False if (message id, consumer) is already there."""
    values = (envelope.id, consumer, envelope.type, envelope.correlationid, timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [
            field.get_db_prep_save(value, connection) for field, value in zip(_CLAIM_FIELDS, values, strict=True)
        ])
        return cursor.fetchone() is not None


_CLAIM_FIELDS = [
    InboxMessage._meta.get_field(name)
    for name in ("message_id", "consumer", "message_type", "correlation_id", "handled_at")
]
#: PostgreSQL and SQLite (3.35+) both speak this; the conflict target is the unique constraint.
_CLAIM_SQL = (
    f"INSERT INTO {InboxMessage._meta.db_table} ({', '.join(f.column for f in _CLAIM_FIELDS)}) "
    f"VALUES ({', '.join(['%s'] * len(_CLAIM_FIELDS))}) ON CONFLICT (message_id, consumer) DO NOTHING RETURNING 1"
)
