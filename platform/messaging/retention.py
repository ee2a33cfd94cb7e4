"""Retention of the bus's tables: published outbox rows and inbox rows go after a set time.

Rows are deleted a bounded batch of primary keys at a time, each batch its own
short transaction, so a purge never holds many locks or one long transaction.
Unpublished outbox rows are never purged (the relay still owes them), nor are
dead letters (a person acts on those). The inbox is what recognises a
redelivered message, so it must remember a message longer than the message
can come back: ``longest_redelivery``, which a system check holds the inbox
retention to.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from messaging.models import InboxMessage, OutboxMessage
from messaging import brokers
from messaging.brokers.base import retry_ceiling


def purgeable(*, now: datetime.datetime | None = None) -> dict[str, QuerySet]:
    """The rows past their retention, by table, each ordered oldest first (the purge's index)."""
    now = now or timezone.now()
    return {
        "outbox": OutboxMessage.objects.filter(published_at__lt=now - settings.BUS_OUTBOX_RETENTION)
        .order_by("published_at"),
        "inbox": InboxMessage.objects.filter(handled_at__lt=now - settings.BUS_INBOX_RETENTION)
        .order_by("handled_at"),
    }


def purge_batch(rows: QuerySet, *, batch_size: int) -> int:
    """Delete the first ``batch_size`` of ``rows`` by primary key; return how many went."""
    ids = list(rows.values_list("pk", flat=True)[:batch_size])
    if not ids:
        return 0
    deleted, _ = rows.model.objects.filter(pk__in=ids).delete()
    return deleted


def purge_bus_tables(*, now: datetime.datetime | None = None, batch_size: int | None = None) -> dict[str, int]:
    """Delete every row past its retention, batch after batch; return how many went per table."""
    batch_size = batch_size or settings.BUS_PURGE_BATCH_SIZE
    deleted = {}
    for table, rows in purgeable(now=now).items():
        deleted[table] = 0
        # A short batch means the table is done (or another relay is purging it too).
        while (count := purge_batch(rows, batch_size=batch_size)) > 0:
            deleted[table] += count
            if count < batch_size:
                break
    return deleted


def longest_redelivery() -> datetime.timedelta:
    """How long after a message was first handled a copy of it may still arrive.

    Each attempt (the first and ``BUS_MAX_RETRIES`` retries) may be delivered up
    to ``BUS_DELIVERY_LIMIT`` + 1 times, a worker dying on it each time, and each
    delivery may run for ``CELERY_TASK_TIME_LIMIT`` or, if longer, wait that long
    for the broker to give it back (Redis's visibility timeout); the attempts are apart by the
    retry schedule; and after the last one a person may retry the dead letter,
    with the message's own id, for ``BUS_DEAD_LETTER_REPLAY_WINDOW``. An outage
    that keeps workers away adds to this; the retention should leave room for it.
    """
    attempts = settings.BUS_MAX_RETRIES + 1
    deliveries = attempts * (settings.BUS_DELIVERY_LIMIT + 1)
    retry_waits = sum(retry_ceiling(retries) for retries in range(settings.BUS_MAX_RETRIES))
    return (
        datetime.timedelta(seconds=deliveries * max(settings.CELERY_TASK_TIME_LIMIT, brokers.current().redelivery_wait())
                           + retry_waits)
        + settings.BUS_DEAD_LETTER_REPLAY_WINDOW
    )
