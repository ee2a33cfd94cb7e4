"""The Celery task that delivers a message to one context's handlers.

Each worker consumes the queues of one context (``BUS_CONTEXT``), and for a
message runs that context's handlers only, each in its own transaction with
its inbox row. A handler that raises is retried with exponential backoff and
jitter, on this context's queue only (never back through an event's fanout
exchange, which would reach the other subscribers again; see
``Topology.retry_route``); after
``BUS_MAX_RETRIES`` the message becomes a dead letter. A message that can
never succeed (bad envelope, unknown type, data that breaks the contract)
becomes a dead letter at once. A database that cannot be reached is no
failure of the message: it waits for the database, uncounted (see
``_consume_once_the_database_answers``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.exceptions import Ignore, Reject, Retry
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from pydantic import ValidationError

from messaging.broker import Outgoing, publish_confirmed
from messaging.contracts import Envelope
from messaging.database import close_if_broken, connection_lost
from messaging.dead_letters import as_uuid, dead_letter_record
from messaging.inbox import handle_once
from messaging.models import DeadLetter
from messaging.outbox import OPERATOR_SOURCE
from messaging.registry import registry
from messaging.task_message import ENVELOPE_ARGUMENT
from messaging.topology import Topology, consumer_queue_name

logger = logging.getLogger(__name__)

#: Characters of a dead letter's error repeated in the task's failure (the row has all of it).
DEAD_LETTERED_ERROR_LIMIT = 1000
#: Seconds between attempts while the database cannot be reached: the first, then doubling to the last.
DATABASE_PROBE_INTERVALS = (0.5, 5.0)


class DatabaseUnreachableError(Exception):
    """The database could not be reached for as long as a worker holds a message (``BUS_DATABASE_WAIT``)."""


class DeadLettered(Exception):
    """The message became a dead letter: the task's failure, as Flower and the task results show it.

    Not a worker error: the row is written and the worker acknowledges the
    message (``messaging.worker.DeliveryRequest``) instead of rejecting it to
    the broker's dead-letter queue, where it would be collected a second time.
    """

    @classmethod
    def of(cls, reason: str, dead_letter_id, error: str) -> DeadLettered:
        """The failure as every report of a dead letter words it: its reason, its row, its error."""
        return cls(f"{reason} (dead letter {dead_letter_id}): {error[:DEAD_LETTERED_ERROR_LIMIT]}")


class HandlerFailedError(Exception):
    """A handler raised; the message may succeed on a later attempt."""

    def __init__(self, handler_name: str) -> None:
        super().__init__(f"handler {handler_name} failed")
        self.handler_name = handler_name


def consume(
    body: Any, *, context: str, headers: dict | None = None, attempts: int = 0, last_attempt: bool = False
) -> dict:
    """Deliver one message body to ``context``'s handlers.

    Returns what happened (``dead_lettered`` and the row's id if it became a
    dead letter); raises ``HandlerFailedError`` (chained to the handler's
    exception) when a handler failed and the message may be retried. On the
    ``last_attempt`` a failing handler makes it a dead letter instead.
    """

    def park(reason: str, error, **fields) -> dict:
        row = dead_letter_record(
            reason=reason, context=context, body=body, error=error,
            headers=headers, attempts=attempts, **fields,
        )
        logger.error("dead-lettered a message for %s: %s", context, reason)
        return {"context": context, "dead_lettered": reason, "dead_letter": str(row.id), "error": row.error}

    try:
        envelope = Envelope.model_validate(body)
    except ValidationError as exc:
        message_id = body.get("id") if isinstance(body, dict) else None
        return park(DeadLetter.Reason.INVALID_ENVELOPE, exc, message_id=as_uuid(message_id))
    fields = {"message_id": envelope.id, "message_type": envelope.type}
    contract = registry.contract_for(envelope.type)
    handlers = registry.handlers_for(envelope.type, context)
    if contract is None or not handlers:
        return park(DeadLetter.Reason.UNKNOWN_TYPE,
                    f"no handler for '{envelope.type}' in context '{context}'", **fields)
    disagreement = _disagreement_with_registry(envelope, contract)
    if disagreement:
        return park(DeadLetter.Reason.INVALID_ENVELOPE, disagreement, **fields)
    try:
        message = contract.model_validate(envelope.data)
    except ValidationError as exc:
        return park(DeadLetter.Reason.INVALID_DATA, exc, **fields)

    handled, duplicates = [], []
    for handler in handlers:
        try:
            ran = handle_once(envelope, message, handler)
        except Exception as exc:
            if last_attempt and not connection_lost(exc):
                return park(DeadLetter.Reason.HANDLER_FAILED, exc, consumer=handler.name, **fields)
            raise HandlerFailedError(handler.name) from exc
        (handled if ran else duplicates).append(handler.name)
    return {"context": context, "handled": handled, "duplicates": duplicates}


def _disagreement_with_registry(envelope: Envelope, contract) -> str | None:
    """Why the envelope's kind, version or source cannot be this contract's, or None.

    A message that lies about its kind would be retried to a queue that does not
    exist (an event as a command goes to ``<context>.commands``); one that lies
    about its source would speak in another context's name.
    """
    if envelope.kind != contract.kind:
        return f"kind '{envelope.kind}', but {envelope.type} is {'an' if contract.kind == 'event' else 'a'} {contract.kind}"
    if envelope.version != contract.version:
        return f"version {envelope.version} of {envelope.type}; this worker knows version {contract.version}"
    if contract.kind == "event" and envelope.source != contract.context():
        return f"source '{envelope.source}', but {envelope.type} is an event of '{contract.context()}'"
    if contract.kind == "command" and envelope.source not in {*registry.contexts_known(), OPERATOR_SOURCE}:
        return f"source '{envelope.source}' is not a context of this platform"
    return None


def message_task(task, *args, **kwargs) -> dict:
    """Body of every message task (one Celery task per message type).

    A message that becomes a dead letter ends the task as a failure
    (``DeadLettered``), which the worker acknowledges: it is in the table.
    """
    context = settings.BUS_CONTEXT
    if not context:
        raise ImproperlyConfigured("BUS_CONTEXT is not set: start workers with `python -m workers <context>`")
    # Anything but the one envelope argument is kept whole for the dead letter.
    sent_an_envelope = not args and list(kwargs) == [ENVELOPE_ARGUMENT]
    body = kwargs[ENVELOPE_ARGUMENT] if sent_an_envelope else {"args": list(args), "kwargs": kwargs}
    request = task.request
    headers = {"task": task.name, "id": request.id, "retries": request.retries,
               "delivery_info": dict(request.delivery_info or {})}
    try:
        outcome = _consume_once_the_database_answers(
            body, context=context, headers=headers, attempts=request.retries + 1,
            last_attempt=request.retries >= settings.BUS_MAX_RETRIES,
        )
    except DatabaseUnreachableError as unreachable:
        envelope = _valid_envelope(body)
        if envelope is None:
            # Unreadable, so a dead letter whatever happens: RabbitMQ keeps it in its
            # dead-letter queue, which the relay empties into the table later.
            raise Reject(unreachable, requeue=False) from unreachable
        # Back to the broker at the same attempt, to wait in a retry queue: requeueing
        # would count toward the quorum queue's delivery limit, a retry never does.
        _send_to_retry_queue(envelope, context=context, retries=request.retries, backoff_step=request.retries)
        logger.warning("database still unreachable: %s %s goes back to the broker, uncounted",
                       envelope["type"], envelope["id"])
        # Acknowledged with no result to store (there is no database to store it in).
        raise Ignore() from unreachable
    except HandlerFailedError as failure:
        error = failure.__cause__
        delay = _send_to_retry_queue(body, context=context, retries=request.retries + 1,
                                     backoff_step=request.retries)
        # The retry is on the broker: acknowledge this delivery, marked RETRY.
        raise Retry(exc=error, when=delay) from error
    if outcome.get("dead_lettered"):
        raise DeadLettered.of(outcome["dead_lettered"], outcome["dead_letter"], outcome["error"])
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
    route, delay = Topology().retry_route(queue, backoff_step)
    publish_confirmed([Outgoing(envelope, exchange=route.exchange, routing_key=route.routing_key,
                                retries=retries, delay=delay)])
    return delay


def register_message_tasks(app) -> None:
    """One Celery task per handled message type, named after the type."""
    for message_type in sorted({h.message_type for h in registry.handlers}):
        app.task(
            name=message_type, bind=True, acks_late=True, reject_on_worker_lost=True,
            Request="messaging.worker:DeliveryRequest",
            # Expected: logged as the task's outcome, without a worker traceback.
            throws=(DeadLettered,),
        )(message_task)
