"""The bus at a glance, read from its own tables: what waits to be published, what was
given up on, and how much was handled lately.

Plain numbers and rows for the admin's overview page (``console.pages``);
each is one query, so the page stays cheap however many messages the tables hold.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from django.db.models import Count, Min, QuerySet
from django.db.models.functions import TruncMinute

from messaging.models import DeadLetter, InboxMessage, OutboxMessage

#: The span of the handled-messages plot, one bar a minute.
ACTIVITY_WINDOW = timedelta(hours=1)


@dataclasses.dataclass(frozen=True)
class OutboxBacklog:
    #: Unpublished rows whose time has come: the relay's work right now.
    due: int
    #: Unpublished rows scheduled for later (a deadline, a delayed command).
    scheduled: int
    #: When the longest-waiting due row became due (None: nothing waits).
    oldest_due_since: datetime | None


def outbox_backlog(now: datetime) -> OutboxBacklog:
    unpublished = OutboxMessage.objects.filter(published_at__isnull=True)
    due = unpublished.filter(available_at__lte=now).aggregate(count=Count("id"), oldest=Min("available_at"))
    return OutboxBacklog(
        due=due["count"],
        scheduled=unpublished.filter(available_at__gt=now).count(),
        oldest_due_since=due["oldest"],
    )


def open_dead_letters() -> QuerySet[DeadLetter]:
    """Dead letters waiting for a person: neither retried nor discarded."""
    return DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)


def dead_letters_by_consumer() -> list[dict]:
    """Open dead letters counted per (context, consumer), most first.

    Each row: ``context``, ``consumer`` (blank when no consumer could be named, e.g. an
    unknown type), ``count``.
    """
    return list(
        open_dead_letters()
        .values("context", "consumer")
        .annotate(count=Count("id"))
        .order_by("-count", "context", "consumer")
    )


@dataclasses.dataclass(frozen=True)
class MinuteCount:
    minute: datetime
    count: int


def handled_per_minute(now: datetime, window: timedelta = ACTIVITY_WINDOW) -> list[MinuteCount]:
    """Inbox rows (one per message and consumer) handled in each minute of ``window``
    up to ``now``, oldest first, a zero for each quiet minute; the last is the minute
    under way."""
    last_minute = now.replace(second=0, microsecond=0)
    minutes = [last_minute - timedelta(minutes=n) for n in reversed(range(int(window.total_seconds() // 60)))]
    counted = (
        InboxMessage.objects.filter(handled_at__gte=minutes[0], handled_at__lte=now)
        .annotate(minute=TruncMinute("handled_at"))
        .values("minute")
        .annotate(count=Count("id"))
        .values_list("minute", "count")
    )
    by_minute = dict(counted)
    return [MinuteCount(minute, by_minute.get(minute, 0)) for minute in minutes]
