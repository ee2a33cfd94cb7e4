"""How much the bus handled lately, read from its inbox, and its processes as people read
them, for the admin's overview page (``console.pages``): one query, so the page stays cheap
however many rows the table holds.

The rest of the overview (the outbox backlog, open dead letters per consumer, live
processes, queue depths) is the bus's own state, which ``/metrics`` reads too:
``messaging.bus_state``.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncMinute

from messaging.health import Health
from messaging.models import InboxMessage

#: The span of the handled-messages plot, one bar a minute.
ACTIVITY_WINDOW = timedelta(hours=1)


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


@dataclasses.dataclass(frozen=True)
class ProcessRow:
    """One running process of the bus on this host, or the lack of any under its name."""

    name: str
    pid: int | None
    state: str
    #: Seconds since it last said how it is.
    silent_for: float | None
    #: Why it is not healthy (``Health.problem``); blank when it is.
    problem: str


def process_rows(processes: dict[str, list[Health]]) -> list[ProcessRow]:
    """A row per running process, by name; a name with none running is a row of its own,
    a problem: that context's messages wait in their queues."""
    now, rows = time.time(), []
    for name, healths in processes.items():
        if not healths:
            rows.append(ProcessRow(name, None, "not running", None, f"no {name} process runs on this host"))
        for health in healths:
            rows.append(ProcessRow(name, health.pid, health.state, max(0.0, now - health.time),
                                   health.problem(max_age=settings.BUS_HEALTH_MAX_AGE, now=now) or ""))
    return rows
