"""The relay: publishes committed outbox rows, marking each only once confirmed.

Rows go out in order of availability, a batch at a time (a scheduled row only
once its time has come; rows written together by id): the relay publishes the batch,
waits for the broker to confirm it, and marks the confirmed rows published in
the same transaction that locked them; if the relay dies in between, the rows
are sent again and consumers absorb the duplicates (at least once). A row the
broker refused stays unpublished and goes out again later, behind newer rows. On
PostgreSQL the rows are locked with ``SKIP LOCKED``, so several relays share
the work without waiting on each other; each relay keeps its own batch in
order, but two relays may interleave, so order across batches is best effort.

Between rounds it also moves what the broker dead-lettered into the dead-letter
table (``messaging.dead_letters``), it holds both connections that needs, and
reports each as its delivery's failed task (``messaging.failed_tasks``); and
every ``BUS_PURGE_INTERVAL`` it deletes rows past their retention
(``messaging.retention``), one batch per table per round until none is left, so
purging a backlog never holds up publishing for more than a batch. Its wait
between rounds ends by the time the next scheduled row falls due.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable

import psycopg
from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Now
from django.utils import timezone
from kombu import Connection
from kombu.exceptions import OperationalError as KombuOperationalError

from messaging import brokers, log_context, metrics, task_message, tracing
from messaging.brokers.base import BatchOutcome, Outgoing, Publisher, Route
from messaging.dead_letters import collect_broker_dead_letters
from messaging.failed_tasks import report_failed_delivery
from messaging.health import Heartbeat
from messaging.models import OutboxMessage
from messaging.outbox import RELAY_CHANNEL
from messaging.retention import purge_batch, purgeable
from messaging.topology import Topology

logger = logging.getLogger(__name__)

#: Longest pause, in seconds, after repeated broker or database failures: short enough
#: that publishing resumes within seconds of the broker or the database coming back.
MAX_BACKOFF = 10.0
#: Longest wait, in seconds, before dead letters are collected again after collecting failed.
MAX_COLLECTION_BACKOFF = 30.0
#: Envelope attributes the relay reads from each row while tracing, for its send spans.
TRACED_FIELDS = ("envelope_source", "envelope_traceparent", "envelope_tracestate")
#: Longest stretch, in seconds, the relay waits without checking whether to stop.
STOP_CHECK_INTERVAL = 1.0


class BrokerUnreachableError(ConnectionError):
    """The relay cannot connect to the broker (its URL, password masked, is in the message)."""


class Relay:
    def __init__(
        self,
        *,
        batch_size: int | None = None,
        confirm_timeout: float | None = None,
        connect: Callable[[], Connection] | None = None,
    ) -> None:
        self.batch_size = batch_size or settings.BUS_RELAY_BATCH_SIZE
        self.confirm_timeout = confirm_timeout or settings.BUS_CONFIRM_TIMEOUT
        #: Returns a new, not yet connected, broker connection: the relay's first, and
        #: another after it dropped a broken one. (Tests pass a fake broker's.)
        self.connect = connect or self._connect_to_the_app_broker
        self.broker = brokers.current()
        self.topology = Topology(broker=self.broker)
        self._routes: dict[tuple[str, str], Route] = {}
        self._connection = None
        self._publisher: Publisher | None = None
        self._events = None
        #: When the next purge is due (time.monotonic()); the first round purges.
        self._next_purge = 0.0
        #: Whether it logged that it only checks the topology (once: it reconnects often in an outage).
        self._said_checked = False
        #: Whether the next connection declares the topology: the first does, and the one after a
        #: row came back unroutable (a queue was deleted under it). Not every reconnection: on a
        #: cluster a declaration waits while a node is cut off, until the others declare it down.
        self._declare_on_connect = True
        #: When dead letters are next collected (time.monotonic()), and the wait after a failure.
        self._next_collection, self._collection_backoff = 0.0, 0.0

    def _connect_to_the_app_broker(self) -> Connection:
        # Socket timeouts as well as the confirm timeout: a hung broker
        # must turn into an error, never into a relay stuck holding row locks.
        # Its own broker user where it has one (least privilege: ``bus_permissions``).
        return current_app.connection_for_write(url=settings.BUS_BROKER_URL_RELAY or None, transport_options={
            "read_timeout": self.confirm_timeout,
            "write_timeout": self.confirm_timeout,
        })

    def _publisher_ready(self) -> Publisher:
        if self._publisher is None:
            self._connection = self.connect()
            self._reach_a_node()
            try:
                # Declared before the first publish: a subscriber's queue exists
                # even if its worker never ran, so no event falls on the floor. A relay
                # whose user may not declare it finds it declared, or fails the round.
                if self._declare_on_connect:
                    if not self.topology.declare_where_allowed(self._connection) and not self._said_checked:
                        logger.info("relay: its broker user may not declare the topology; found it declared")
                        self._said_checked = True
                    self._declare_on_connect = False
                self._publisher = self.broker.publisher(self._connection.default_channel, timeout=self.confirm_timeout)
            except Exception:
                self.close(broken=True)  # or the next round would open a second connection
                raise
        return self._publisher

    def _reach_a_node(self) -> None:
        """Connect to the broker: each node of a failover URL once, in turn (kombu moves to
        the next after each failure), saying which it reached; raise when none answered."""
        try:
            self._connection.ensure_connection(max_retries=max(1, len(self._connection.alt) - 1))
        except (KombuOperationalError, *self._connection.connection_errors) as exc:
            # as_uri() masks the password.
            where = self._connection.as_uri()
            self.close(broken=True)
            raise BrokerUnreachableError(f"cannot reach the broker at {where}: {exc}") from exc
        # Which node of several: after a node's loss, the log says where publishing moved.
        logger.info("relay: connected to %s", self._connection.as_uri())

    def close(self, *, broken: bool = False) -> None:
        if self._connection is not None:
            if broken:
                # No close handshake: a broker that stopped answering would never finish it.
                self._connection.collect()
            else:
                self._connection.release()
        self._connection = self._publisher = self._events = None

    def publish_batch(self) -> int:
        """Publish one batch of unpublished rows; return how many rows it held.

        The batch is published, then its confirms are awaited together; the
        rows the broker confirmed are marked in one statement, in the
        transaction that locked them. A refused row or a broker error records
        the error on the rows it left unpublished and is raised after commit.
        """
        if connection.vendor == "sqlite" and not self._anything_to_publish():
            return 0
        with transaction.atomic():
            rows = self.claim_batch()
            if not rows:
                return 0
            sends = tracing.sends(self.broker.messaging_system)
            outgoing = [self._outgoing(row) for row in rows]
            try:
                publisher = self._publisher_ready()
            except Exception as exc:
                outcome = BatchOutcome(error=exc)
            else:
                outcome = publisher.publish(outgoing)
            self._accept_unheard_events(rows, outcome)
            ids = [row.id for row in rows]
            self._mark_published([ids[position] for position in outcome.confirmed])
            failure = self._record_failures(ids, outcome)
        # Traced and counted once committed: a row is published when it is marked so, and
        # neither may hold the rows' locks longer, nor ever decide whether they are marked.
        if sends is not None:
            self._trace(sends, rows, outgoing, outcome)
        metrics.recorder.relay_batch(len(rows), outcome.confirm_wait)
        metrics.recorder.published(rows[position].message_type for position in outcome.confirmed)
        if outcome.unroutable:
            self._declare_on_connect = True  # a queue was deleted under us: declare the topology again
        if outcome.error is not None or outcome.unroutable:
            self.close(broken=outcome.error is not None)
        if failure is not None:
            raise failure
        return len(rows)

    def _outgoing(self, row) -> Outgoing:
        if row.redeliver_to:
            route = self.topology.redelivery_route(row.redeliver_to, row.kind, row.message_type)
        else:
            key = (row.kind, row.message_type)
            route = self._routes.get(key)
            if route is None:
                route = self._routes[key] = self.topology.route(*key)
        envelope = task_message.StoredEnvelope(row.envelope_text, id=row.envelope_id, type=row.envelope_type,
                                               correlationid=row.envelope_correlationid)
        return Outgoing(envelope, exchange=route.exchange, routing_key=route.routing_key)

    def _trace(self, sends: tracing.Sends, rows: list, outgoing: list[Outgoing], outcome: BatchOutcome) -> None:
        """A ``send`` span per row of the batch, failed for each row the broker did not confirm.
        Never raises: the batch is published and marked whatever becomes of its spans."""
        try:
            self._trace_rows(sends, rows, outgoing, outcome)
        except Exception:
            logger.exception("relay: the batch's send spans could not be made")

    def _trace_rows(self, sends: tracing.Sends, rows: list, outgoing: list[Outgoing], outcome: BatchOutcome) -> None:
        confirmed = set(outcome.confirmed)
        failure = outcome.refusal(len(rows)) or outcome.error
        for position, (row, message) in enumerate(zip(rows, outgoing, strict=True)):
            envelope = {"id": row.envelope_id, "type": row.envelope_type, "source": row.envelope_source,
                        "correlationid": row.envelope_correlationid,
                        "traceparent": row.envelope_traceparent, "tracestate": row.envelope_tracestate}
            error = None if position in confirmed else f"{type(failure).__name__}: {failure}"
            # A command, or a copy for one context, is sent to a queue; an event to its exchange.
            by_queue = row.kind == "command" or row.redeliver_to
            sends.record(envelope, destination=message.routing_key if by_queue else message.exchange_name,
                         routing_key=message.routing_key, error=error)

    def _accept_unheard_events(self, rows: list, outcome: BatchOutcome) -> None:
        """Count as delivered an event returned because no context subscribes to it.

        The publisher does not know its subscribers, and an event nobody listens to
        yet has no queue: nothing is lost. A command, or an event some context
        handles, that comes back stays unpublished: its queue is missing.
        """
        for position in list(outcome.unroutable):
            row = rows[position]
            if row.kind == "event" and not row.redeliver_to and not self.topology.registry.handlers_for(row.message_type):
                with log_context.delivery({"id": row.envelope_id, "type": row.envelope_type,
                                           "correlationid": row.envelope_correlationid}):
                    logger.warning("relay: no queue is bound to %s; %s went to no one", row.message_type, row.message_id)
                outcome.unroutable.remove(position)
                outcome.confirmed.append(position)

    def _record_failures(self, ids: list[int], outcome: BatchOutcome) -> Exception | None:
        """Record why rows stayed unpublished; return the error to raise, if any."""
        failure = outcome.refusal(len(ids))
        if failure is not None:
            self._record_error([ids[p] for p in outcome.refused + outcome.unroutable], failure)
        if outcome.error is not None:
            failure = outcome.error
            settled = set(outcome.confirmed) | set(outcome.refused) | set(outcome.unroutable)
            self._record_error([row_id for p, row_id in enumerate(ids) if p not in settled], failure)
        return failure

    def _record_error(self, ids: list[int], error: Exception) -> None:
        OutboxMessage.objects.filter(id__in=ids).update(
            attempts=F("attempts") + 1, last_error=f"{type(error).__name__}: {error}"[:2000]
        )

    def collect_dead_letters(self) -> int:
        """Move what the broker dead-lettered into the dead-letter table (the embedded broker has none)."""
        if self.broker.dead_letter_queue() is None:
            return 0
        return collect_broker_dead_letters(self._publisher_ready().channel, collected=self._report_failed)

    def _report_failed(self, row) -> None:
        """Report a collected dead letter as its delivery's failed task: Celery sends no
        failure for a task whose worker died holding it, and the relay is the first to know."""
        try:
            dispatcher = self._event_dispatcher()
        except Exception:
            logger.exception("relay: cannot send task events; dead letter %s goes to the task results only", row.id)
            dispatcher = None
        report_failed_delivery(row, app=current_app, dispatcher=dispatcher)

    def _event_dispatcher(self):
        """A task-event dispatcher on a channel of its own, or None when task events are off."""
        if self._events is None and settings.CELERY_WORKER_SEND_TASK_EVENTS:
            # Not the publisher's channel: it is in confirm mode, and an event published
            # there would take a delivery tag the publisher counts on.
            channel = self._connection.channel()
            dispatcher = current_app.events.Dispatcher(
                channel=channel, hostname=f"relay.{os.getpid()}@{socket.gethostname()}",
                buffer_while_offline=False,  # an event that cannot go is logged, never kept
            )
            # Declared as Flower declares it: publishing to an exchange that does not exist
            # closes the channel, and the error would surface in the publisher's next wait.
            dispatcher.exchange(channel).declare()
            self._events = dispatcher
        return self._events

    def _collect_dead_letters_safely(self) -> None:
        # Its own failures never stop publishing. Tried again after a wait that doubles, up to
        # MAX_COLLECTION_BACKOFF: on a cluster with a node cut off, taking from the dead-letter queue
        # waits until the others declare that node down, and each try would hold up a round.
        if time.monotonic() < self._next_collection:
            return
        try:
            self.collect_dead_letters()
        except BrokerUnreachableError:
            raise  # not a collecting problem: the round fails, and says why
        except Exception:
            self._collection_backoff = min(MAX_COLLECTION_BACKOFF, max(1.0, 2 * self._collection_backoff))
            self._next_collection = time.monotonic() + self._collection_backoff
            logger.exception("relay: collecting dead letters failed; trying again in %.0fs", self._collection_backoff)
            connection.close()
            self.close(broken=True)
        else:
            self._collection_backoff = 0.0

    def _anything_to_publish(self) -> bool:
        # On SQLite each transaction here is BEGIN IMMEDIATE, taking the database's
        # one write lock: a plain read first keeps a frequent poll from queueing
        # behind, and ahead of, every worker's writes.
        return OutboxMessage.objects.due().exists()

    def claim_batch(self) -> list:
        """Lock the oldest due rows no other relay holds (inside a transaction).

        Returns named rows (id, message_id, kind, message_type, redeliver_to, and the
        envelope as stored: ``envelope_text``, with the ``envelope_id``, ``envelope_type``
        and ``envelope_correlationid`` read from it), not model instances, which would
        cost more than publishing them: the envelope is never decoded here.
        """
        # While tracing, the attributes a row's send span needs too.
        traced = {name: KeyTextTransform(name.removeprefix("envelope_"), "envelope") for name in TRACED_FIELDS} \
            if tracing.enabled() else {}
        return list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .due()
            .order_by("available_at", "id")
            .annotate(
                envelope_text=Cast("envelope", TextField()),
                envelope_id=KeyTextTransform("id", "envelope"),
                envelope_type=KeyTextTransform("type", "envelope"),
                envelope_correlationid=KeyTextTransform("correlationid", "envelope"),
                **traced,
            )
            .values_list("id", "message_id", "kind", "message_type", "redeliver_to", "envelope_text", "envelope_id",
                         "envelope_type", "envelope_correlationid", *traced, named=True)[: self.batch_size]
        )

    def seconds_to_wait(self) -> float:
        """The poll interval, or less when a scheduled row falls due sooner."""
        until_due = (
            OutboxMessage.objects.filter(published_at__isnull=True, available_at__gt=Now())
            .order_by("available_at")
            .values_list(F("available_at") - Now(), flat=True)
            .first()
        )
        poll = settings.BUS_RELAY_POLL_INTERVAL
        return poll if until_due is None else min(poll, until_due.total_seconds())

    def purge_when_due(self) -> bool:
        """Once ``BUS_PURGE_INTERVAL`` has passed, purge a batch per table past its retention.

        Returns True while a table has more to purge: the next round goes on
        with it, after a look at the outbox, instead of waiting for the interval.
        """
        if time.monotonic() < self._next_purge:
            return False
        batch_size = settings.BUS_PURGE_BATCH_SIZE
        try:
            full = [purge_batch(rows, batch_size=batch_size) == batch_size for rows in purgeable().values()]
        except Exception:
            # Its own failures never stop publishing: it is tried again next interval.
            logger.exception("relay: purging rows past their retention failed")
            connection.close()
            full = []
        if any(full):
            return True
        self._next_purge = time.monotonic() + settings.BUS_PURGE_INTERVAL.total_seconds()
        return False

    def _mark_published(self, ids: list[int]) -> None:
        if ids:
            OutboxMessage.objects.filter(id__in=ids).update(published_at=timezone.now())

    def run(self, *, stop=lambda: False) -> None:
        """Publish until ``stop()`` is true: drain, then wait for a nudge or the poll.

        Its liveness file (``messaging.health``) says ``publishing`` or ``idle``
        after each round and ``failing`` while a round fails.
        """
        failures = 0
        wakeup = _Wakeup()
        heartbeat = Heartbeat("relay")
        try:
            while not stop():
                try:
                    published = batch = self.publish_batch()
                    while batch == self.batch_size and not stop():
                        heartbeat.beat("publishing")  # a long backlog is work, not a hang
                        batch = self.publish_batch()
                        published += batch
                    failures = 0
                    self._collect_dead_letters_safely()
                    wait = 0 if self.purge_when_due() else self.seconds_to_wait()
                except Exception as exc:
                    failures += 1
                    delay = random.uniform(0, min(MAX_BACKOFF, 0.5 * 2**failures))
                    heartbeat.beat("failing", f"{type(exc).__name__}: {exc}")
                    if isinstance(exc, BrokerUnreachableError):
                        logger.error("relay: %s; retrying in %.1fs", exc, delay)
                    else:
                        logger.exception("relay: publishing failed; retrying in %.1fs", delay)
                    # A broken database connection is replaced on the next attempt
                    # (publish_batch already dropped a broken broker connection).
                    connection.close()
                    time.sleep(delay)
                    continue
                heartbeat.beat("publishing" if published else "idle")
                wakeup.wait(wait, stop=stop, tick=lambda: heartbeat.beat("idle"))
        finally:
            wakeup.close()
            self.close()
            heartbeat.forget()


class _Wakeup:
    """Waits for an outbox nudge (PostgreSQL LISTEN) or until the poll interval passes.

    Losing the listening connection only loses the fast path: the poll goes on,
    and the next wait connects again.
    """

    def __init__(self) -> None:
        self._listener = None

    def wait(self, timeout: float, *, stop, tick=lambda: None) -> None:
        """Return on a nudge, after ``timeout`` seconds, or soon after ``stop()`` turns true;
        ``tick()`` runs between the slices of a long wait."""
        deadline = time.monotonic() + timeout
        while not stop() and (remaining := deadline - time.monotonic()) > 0:
            # Short slices: a SIGTERM sets stop(), and the relay should not sleep through it.
            if self._nudged(min(remaining, STOP_CHECK_INTERVAL)):
                return
            tick()

    def _nudged(self, timeout: float) -> bool:
        if connection.vendor != "postgresql":
            time.sleep(timeout)
            return False
        try:
            if self._listener is None:
                self._listener = self._listen()
            return any(True for _ in self._listener.notifies(timeout=timeout, stop_after=1))
        except Exception:
            logger.warning("relay: not listening for nudges, polling instead", exc_info=True)
            self.close()
            time.sleep(timeout)
            return False

    def _listen(self) -> psycopg.Connection:
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        listener = psycopg.connect(**params, autocommit=True)
        listener.execute(f"LISTEN {RELAY_CHANNEL}")
        return listener

    def close(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            finally:
                self._listener = None
