"""The Celery task that delivers a message to one context: one task per message type.

Each worker consumes the queues of one context (``BUS_CONTEXT``) and runs, for
a message, that context's handlers only (``messaging.delivery.consume``). A
handler that raises is retried with exponential backoff and jitter, on this
context's queue only (never back through an event's fanout exchange, which
would reach the other subscribers again; see ``Topology.retry_route``); after
``BUS_MAX_RETRIES`` the message becomes a dead letter and the task fails with
``DeadLettered``. A message of a contract version newer than this worker's
code goes back to the broker, uncounted, for a worker running the newer code
(``messaging.delivery``). A database that cannot be reached is no failure of the
message: it waits for the database, uncounted
(``_consume_once_the_database_answers``).

``register_message_tasks`` (called by ``MessagingConfig.ready``) names each
task after its message type: the task name on the wire is the message type.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.exceptions import Ignore, Reject, Retry
from django.conf import settings
from django.db import connection
from pydantic import ValidationError

from messaging import tracing
from messaging.brokers import publish_confirmed
from messaging.brokers.base import Outgoing
from messaging.contexts import worker_context
from messaging.contracts import Envelope
from messaging.database import close_if_broken, connection_lost
from messaging.delivery import DeadLettered, HandlerFailedError, NewerVersionError, consume
from messaging.registry import registry
from messaging.task_message import envelope_from_arguments, headers_of_request
from messaging.topology import Topology, consumer_queue_name

logger = logging.getLogger(__name__)

#: Seconds between attempts while the database cannot be reached: the first, then doubling to the last.
DATABASE_PROBE_INTERVALS = (0.5, 5.0)


class DatabaseUnreachableError(Exception):
    """The database could not be reached for as long as a worker holds a message (``BUS_DATABASE_WAIT``)."""


def message_task(task, *args, **kwargs) -> dict:
    """Body of every message task (one Celery task per message type).

    A message that becomes a dead letter ends the task as a failure
    (``DeadLettered``), which the worker acknowledges: it is in the table.
    """
    context = worker_context()
    body = envelope_from_arguments(args, kwargs)
    request = task.request
    with tracing.processing(body, context=context, delivery_id=request.id) as delivery:
        return _deliver(task, body, context, delivery)


def _deliver(task, body: Any, context: str, delivery: tracing.Delivery) -> dict:
    request = task.request
    headers = headers_of_request(task.name, request)
    try:
        outcome = _consume_once_the_database_answers(
            body, context=context, headers=headers, attempts=request.retries + 1,
            last_attempt=request.retries >= settings.BUS_MAX_RETRIES,
        )
    except DatabaseUnreachableError as unreachable:
        envelope = _valid_envelope(body)
        if envelope is None:
            # Unreadable, so a dead letter whatever happens: the broker keeps it in its
            # dead-letter queue, which the relay empties into the table later.
            raise Reject(unreachable, requeue=False) from unreachable
        # Back to the broker at the same attempt, to wait in a retry queue: requeueing
        # would count toward the quorum queue's delivery limit, a retry never does.
        _send_to_retry_queue(envelope, context=context, retries=request.retries, backoff_step=request.retries)
        logger.warning("database still unreachable: %s %s goes back to the broker, uncounted",
                       envelope["type"], envelope["id"])
        delivery.retried(unreachable)
        # Acknowledged with no result to store (there is no database to store it in).
        raise Ignore() from unreachable
    except NewerVersionError as newer:
        # Back to the broker for a sibling running the newer code (a rolling deploy),
        # uncounted and after the shortest wait: this worker will never handle it.
        delay = _send_to_retry_queue(body, context=context, retries=request.retries, backoff_step=0)
        logger.warning("%s %s: %s", body["type"], body["id"], newer)
        delivery.held_back(str(newer))
        raise Retry(exc=newer, when=delay) from newer
    except HandlerFailedError as failure:
        error = failure.__cause__
        delay = _send_to_retry_queue(body, context=context, retries=request.retries + 1,
                                     backoff_step=request.retries)
        delivery.retried(error)
        # The retry is on the broker: acknowledge this delivery, marked RETRY.
        raise Retry(exc=error, when=delay) from error
    if outcome.get("dead_lettered"):
        delivery.dead_lettered(outcome["dead_lettered"], outcome["error"])
        raise DeadLettered.of(outcome["dead_lettered"], outcome["dead_letter"], outcome["error"])
    delivery.handled(outcome)
    return outcome


def _consume_once_the_database_answers(
    body: Any, *, context: str, headers: dict, attempts: int, last_attempt: bool
) -> dict:
    """``consume``, tried again while the database cannot be reached, up to ``BUS_DATABASE_WAIT`` seconds.

    The message waits where it is: this delivery stays unacknowledged, and with
    a prefetch of one this pool process takes nothing else meanwhile, so the
    rest of the queue waits on the broker and nothing spins. That also costs
    no delivery against the quorum queue's limit, as a requeue would. The wait
    is bounded to stay well inside the task's time limits; after it the caller
    hands the message back to the broker (a retry queue), still uncounted.
    Running ``consume`` again is safe: whatever committed is in the inbox.
    """
    deadline = time.monotonic() + settings.BUS_DATABASE_WAIT
    pause, longest = DATABASE_PROBE_INTERVALS
    while True:
        try:
            return consume(body, context=context, headers=headers, attempts=attempts, last_attempt=last_attempt)
        except Exception as exc:
            if not connection_lost(exc):
                raise
            close_if_broken(connection)
            error = exc.__cause__ if isinstance(exc, HandlerFailedError) else exc
            if time.monotonic() + pause > deadline:
                raise DatabaseUnreachableError(f"{type(error).__name__}: {error}") from exc
            logger.warning("database unreachable (%s: %s); message %s waits %.1fs",
                           type(error).__name__, str(error).strip(), headers.get("id"), pause)
            time.sleep(pause)
            pause = min(pause * 2, longest)


def _valid_envelope(body: Any) -> dict | None:
    try:
        Envelope.model_validate(body)
    except ValidationError:
        return None
    return body


def _send_to_retry_queue(envelope: dict, *, context: str, retries: int, backoff_step: int) -> float:
    """Publish ``envelope`` to wait in a retry queue, then return to this context's queue only.

    ``retries`` is the count the message carries on; ``backoff_step`` picks the
    delay from the retry schedule. Returns the delay.
    """
    queue = consumer_queue_name(context, envelope["kind"], envelope["type"])
    retry = Topology().retry_route(queue, backoff_step)
    publish_confirmed([Outgoing(envelope, exchange=retry.route.exchange, routing_key=retry.route.routing_key,
                                retries=retries, expiration=retry.expiration, countdown=retry.countdown)])
    return retry.delay


def register_message_tasks(app) -> None:
    """One Celery task per handled message type, named after the type."""
    for message_type in sorted({h.message_type for h in registry.handlers}):
        app.task(
            name=message_type, bind=True, acks_late=True, reject_on_worker_lost=True,
            Request="messaging.worker:DeliveryRequest",
            # Expected: logged as the task's outcome, without a worker traceback.
            throws=(DeadLettered,),
        )(message_task)
