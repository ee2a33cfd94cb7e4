"""A new subscriber catches up: an event type's history, sent to that one context only.

A context that starts subscribing to an event receives what is published from
then on. The outbox still holds what was published before (for
``BUS_OUTBOX_RETENTION``): a catch-up writes each of those events again, with
its own id, for that context's queue only, as a dead letter's retry does
(``outbox.redeliver_many``), oldest first, in the order the relay published
them. The relay publishes the copies through the default exchange to that one
queue, never to the event's fanout exchange: the other subscribers see
nothing. A copy of an event the subscriber had already is absorbed by its
inbox (same message id), so the range may overlap what it received live.

The copies are the progress. An event whose copy for that context is in the
outbox is not copied again, so a catch-up stopped halfway continues where it
stopped when run again and sends nothing twice; no other record is needed,
since a copy is published after its original and the purge goes by publication
time, so a copy is kept as long as the event it copies.

It leaves room for live traffic: copies are written a chunk at a time (about a
second's worth at the rate asked), and the next chunk only once the relay has
published the last one and the rate allows. Live rows written meanwhile wait
behind one chunk at most in the outbox, and the subscriber's queue, which its
live events of that type share, grows by at most what its worker does not keep
up with at that rate.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable
from time import monotonic, sleep

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from messaging import outbox
from messaging.contracts import Envelope
from messaging.models import OutboxMessage
from messaging.registry import registry

#: Copies per second unless told otherwise: a quarter of what one worker handles on
#: two cores (about 200 messages/s), so the subscriber's queue does not grow and its
#: live events of that type wait behind a second of copies at most.
DEFAULT_RATE = 50.0
#: Seconds between looks at whether the relay has published the last chunk.
RELAY_POLL_INTERVAL = 0.1
#: Seconds the relay may take over a chunk before the catch-up says it is waiting for it.
RELAY_SLOW_AFTER = 30.0
#: Longest sleep, in seconds, before looking again whether to stop.
STOP_CHECK_INTERVAL = 0.5


class CatchUpError(ValueError):
    """A catch-up that cannot be done as asked; the message says why and what can be."""


@dataclasses.dataclass(frozen=True)
class CatchUp:
    """The events of ``event_type`` published from ``since`` until ``until``, for ``context``.

    ``until`` is when the catch-up was planned: what was published after that
    reached the subscriber through its own queue, which was bound by then.
    """

    context: str
    event_type: str
    since: datetime.datetime
    until: datetime.datetime

    @classmethod
    def plan(cls, *, context: str, event_type: str, since: datetime.datetime,
             now: datetime.datetime | None = None) -> CatchUp:
        """The catch-up of ``context`` on ``event_type`` since ``since``, or a ``CatchUpError``
        saying why not: an unknown context or type, a command, a context that does not
        subscribe to the type, or a time older than the history kept."""
        now = now or timezone.now()
        _check_subscription(context, event_type)
        catch_up = cls(context=context, event_type=event_type, since=since, until=now)
        catch_up._check_history_kept(now)
        return catch_up

    def history(self) -> QuerySet:
        """The events of the range as the relay published them to every subscriber,
        oldest first (the relay's order: by availability, then as written)."""
        return OutboxMessage.objects.filter(
            kind="event", message_type=self.event_type, redeliver_to="",
            published_at__gte=self.since, published_at__lte=self.until,
        ).order_by("available_at", "id")

    def pending(self) -> QuerySet:
        """The events of the range not sent to ``context`` yet (no copy of it for ``context``)."""
        copies = OutboxMessage.objects.filter(redeliver_to=self.context, message_id=OuterRef("message_id"))
        return self.history().exclude(Exists(copies))

    def send_next(self, limit: int, *, after: OutboxMessage | None = None) -> list[OutboxMessage]:
        """Copy the next ``limit`` pending events (after ``after``, the last one copied)
        for ``context``'s queue, in one transaction; return the events copied, in order."""
        rows = self.pending()
        if after is not None:
            # Where this run stands: each chunk reads on from it, never the range again.
            rows = rows.filter(Q(available_at__gt=after.available_at) | Q(available_at=after.available_at,
                                                                          id__gt=after.id))
        with transaction.atomic():
            events = list(rows[:limit])
            if events:
                outbox.redeliver_many([Envelope.model_validate(row.envelope) for row in events],
                                      context=self.context)
        return events

    def run(self, *, rate: float = DEFAULT_RATE, stop: Callable[[], bool] = lambda: False,
            progress: Callable[[int], None] = lambda sent: None,
            notice: Callable[[str], None] = lambda text: None) -> int:
        """Send every pending event, ``rate`` per second at most, a chunk at a time, each once
        the relay has published the one before; return how many the relay published.

        ``progress(sent)`` is told after each chunk the relay published; ``notice`` hears
        when the relay is slow. Once ``stop()`` is true, no new chunk is written: a chunk
        written already is left to the relay, and a run with the same range goes on after it.
        """
        if not (rate > 0 and math.isfinite(rate)):
            raise CatchUpError(f"the rate is copies per second, above 0 and finite, not {rate}")
        # About a second's worth, so the pace is even; one relay batch at most, so live rows
        # written meanwhile wait behind a single batch of copies.
        chunk = max(1, min(math.ceil(rate), settings.BUS_RELAY_BATCH_SIZE))
        started, sent, last = monotonic(), 0, None
        while not stop():
            events = self.send_next(chunk, after=last)
            if not events:
                break
            last = events[-1]
            if not self._published(events, stop=stop, notice=notice):
                break
            sent += len(events)
            progress(sent)
            if len(events) < chunk:
                break  # the range is fixed: a short chunk was its last
            # The n-th copy not before n / rate seconds after the start: a relay that fell
            # behind is not followed by a burst.
            _sleep_unless_stopped(started + sent / rate - monotonic(), stop)
        return sent

    def _published(self, events: list[OutboxMessage], *, stop, notice) -> bool:
        """Wait until the relay has published the copies of ``events``; False if stopped first."""
        copies = OutboxMessage.objects.filter(
            redeliver_to=self.context, message_id__in=[row.message_id for row in events], published_at__isnull=True,
        )
        waiting_since, told = monotonic(), False
        while copies.exists():
            if stop():
                return False
            if not told and monotonic() - waiting_since > RELAY_SLOW_AFTER:
                notice(f"the relay has not published the last {len(events)} copies for {RELAY_SLOW_AFTER:.0f}s: "
                       "is it running? (waiting on; Ctrl-C stops, and a rerun goes on from here)")
                told = True
            sleep(RELAY_POLL_INTERVAL)
        return True

    def _check_history_kept(self, now: datetime.datetime) -> None:
        outbox_kept_since = now - settings.BUS_OUTBOX_RETENTION
        inbox_kept_since = now - settings.BUS_INBOX_RETENTION
        available_since = max(outbox_kept_since, inbox_kept_since)
        if self.since >= available_since:
            return
        oldest = (OutboxMessage.objects.filter(kind="event", message_type=self.event_type, redeliver_to="",
                                               published_at__isnull=False)
                  .order_by("published_at").values_list("published_at", flat=True).first())
        kept = (f"the oldest {self.event_type} kept was published at {oldest.isoformat()}" if oldest
                else f"no {self.event_type} published is kept")
        if outbox_kept_since >= inbox_kept_since:
            why = (f"the outbox keeps published events for BUS_OUTBOX_RETENTION ({settings.BUS_OUTBOX_RETENTION}) "
                   "and those older may be purged already")
        else:
            why = (f"the inbox remembers handled messages for BUS_INBOX_RETENTION ({settings.BUS_INBOX_RETENTION}), "
                   "so an older copy of an event the subscriber had could be handled twice")
        raise CatchUpError(
            f"--since {self.since.isoformat()} is older than the history kept: {why}. Events published "
            f"from {available_since.isoformat()} to now can be sent ({kept})"
        )


def _check_subscription(context: str, event_type: str) -> None:
    contexts = registry.contexts_known()
    if context not in contexts:
        raise CatchUpError(f"unknown context '{context}': the contexts are {', '.join(sorted(contexts))}")
    contract = registry.contract_for(event_type)
    events = sorted(c.type_name() for c in registry.contracts if c.kind == "event")
    if contract is None:
        raise CatchUpError(f"unknown message type '{event_type}': the events are {', '.join(events)}")
    if contract.kind != "event":
        raise CatchUpError(f"{event_type} is a command: it has one receiver, its owner, which had it already; "
                           "a catch-up sends the history of an event to a subscriber that joined late")
    if not registry.handlers_for(event_type, context):
        subscribers = sorted({handler.context for handler in registry.handlers_for(event_type)})
        raise CatchUpError(
            f"{context} does not subscribe to {event_type} in this code (its subscribers: "
            f"{', '.join(subscribers) or 'none'}): deploy the subscriber first, and run this with its code"
        )


def _sleep_unless_stopped(seconds: float, stop: Callable[[], bool]) -> None:
    deadline = monotonic() + seconds
    while (remaining := deadline - monotonic()) > 0 and not stop():
        sleep(min(remaining, STOP_CHECK_INTERVAL))
