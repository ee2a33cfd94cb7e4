"""The bus's state at one moment, as numbers: what waits to be published, what was given up
on, which of its processes are alive on this host, and what each queue holds.

Each is read when asked, from the bus's own tables, its liveness files
(``messaging.health``) or the broker, so every reader sees the same numbers: the
console's overview page and the ``/metrics`` scrape (``messaging.metrics_endpoint``)
both read them here. The database numbers are one query each, cheap however many
rows the tables hold; the queue depths ask the broker within a time limit, and
say nothing rather than wait for a slow one.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

from django.db.models import Count, Min, QuerySet

from messaging import brokers
from messaging.health import Health, read_healths
from messaging.models import DeadLetter, OutboxMessage
from messaging.registry import registry
from messaging.topology import Topology, context_of_queue

logger = logging.getLogger(__name__)

#: The liveness name of the relay's processes (``messaging.relay``).
RELAY = "relay"
#: Seconds the broker gets to connect and answer for the queue depths.
QUEUE_DEPTH_TIMEOUT = 2.0


def worker_name(context: str) -> str:
    """The liveness name of ``context``'s worker processes (``messaging.worker.LivenessStep``)."""
    return f"worker-{context}"


@dataclasses.dataclass(frozen=True)
class OutboxBacklog:
    #: Unpublished rows whose time has come: the relay's work right now.
    due: int
    #: Unpublished rows scheduled for later (a deadline, a delayed command).
    scheduled: int
    #: When the longest-waiting due row became due (None: nothing waits).
    oldest_due_since: datetime | None

    def oldest_due_age(self, now: datetime) -> float:
        """Seconds the longest-waiting due row has waited (0 when none waits)."""
        return 0.0 if self.oldest_due_since is None else max(0.0, (now - self.oldest_due_since).total_seconds())


def outbox_backlog(now: datetime) -> OutboxBacklog:
    unpublished = OutboxMessage.objects.filter(published_at__isnull=True)
    due = unpublished.due(at=now).aggregate(count=Count("id"), oldest=Min("available_at"))
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


def workers_alive() -> dict[str, int]:
    """Running worker processes of each context that has handlers, on this host (0: none)."""
    return {context: len(read_healths(worker_name(context))) for context in registry.contexts()}


def relays_alive() -> int:
    """Running relay processes on this host."""
    return len(read_healths(RELAY))


def processes() -> dict[str, list[Health]]:
    """What each running bus process of this host last said, by liveness name: the relay's,
    then each context's worker's (an empty list: none runs); the processes counted alive above."""
    names = [RELAY, *(worker_name(context) for context in registry.contexts())]
    return {name: sorted(read_healths(name), key=lambda health: health.pid) for name in names}


@dataclasses.dataclass(frozen=True)
class QueueDepth:
    name: str
    #: ``consumer`` (a context's), ``retry`` (where retries wait on the broker) or ``dead letters``.
    kind: str
    #: The context consuming it; blank for the broker's own queues.
    context: str
    messages: int


def queues(timeout: float = QUEUE_DEPTH_TIMEOUT) -> list[QueueDepth] | None:
    """Each bus queue with what it holds (``queue_depths``), said what it is for; None if the
    broker did not answer."""
    depths = queue_depths(timeout)
    if depths is None:
        return None
    broker = brokers.current()
    dead_letters = broker.dead_letter_queue()
    found = []
    for name, messages in depths.items():
        if dead_letters is not None and name == dead_letters.name:
            kind, context = "dead letters", ""
        elif broker.owns_queue(name):
            kind, context = "retry", ""
        else:
            kind, context = "consumer", context_of_queue(name)
        found.append(QueueDepth(name, kind, context, messages))
    return found


def retrying_now(depths: list[QueueDepth]) -> int | None:
    """Messages waiting on the broker to be tried again (its retry queues); None where retries
    wait in the workers instead (a countdown, ``Broker.retries_wait_in_worker``), out of its sight."""
    if brokers.current().retries_wait_in_worker:
        return None
    return sum(queue.messages for queue in depths if queue.kind == "retry")


def queue_depths(timeout: float = QUEUE_DEPTH_TIMEOUT) -> dict[str, int] | None:
    """Messages each of the bus's queues holds, by name; None if the broker did not answer
    within about ``timeout`` seconds (it is logged, never raised)."""
    broker = brokers.current()
    names = [queue.name for queue in Topology(broker=broker).queues()]
    try:
        with broker.connection(read_timeout=timeout, write_timeout=timeout) as connection:
            connection.connect_timeout = timeout
            # Each node of a failover URL once, then give up: a page waits on this.
            connection.ensure_connection(max_retries=max(0, len(connection.alt) - 1))
            return broker.queue_depths(connection.channel(), names)
    except Exception as exc:
        logger.warning("queue depths unknown: the broker did not answer: %s: %s", type(exc).__name__, exc)
        return None
