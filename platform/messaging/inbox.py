"""Idempotent handling: a handler's effects are applied once per message.

A handler may run more than once for one message (the broker redelivers);
its effects are applied once, because the inbox row for (message id,
consumer) is inserted in the same transaction as those effects. A second
delivery finds the row and skips the handler; two concurrent deliveries on
PostgreSQL make the loser's insert wait for the winner, then fail.
"""

from django.db import IntegrityError, transaction

from messaging import causation
from messaging.contracts import Envelope, Message
from messaging.models import InboxMessage
from messaging.registry import Handler


def handle_once(envelope: Envelope, message: Message, handler: Handler) -> bool:
    """Run ``handler`` unless it already handled this message; True if it ran."""
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint, so a duplicate leaves the outer one usable
                InboxMessage.objects.create(
                    message_id=envelope.id,
                    consumer=handler.name,
                    message_type=envelope.type,
                    correlation_id=envelope.correlation_id,
                )
        except IntegrityError:
            return False
        with causation.handling(envelope, handler.context):
            handler.func(message)
    return True
