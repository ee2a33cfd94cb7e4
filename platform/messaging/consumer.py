"""The Celery task that delivers a message to one context's handlers.

Each worker consumes the queues of one context (``BUS_CONTEXT``), and for a
message runs that context's handlers only, each in its own transaction with
its inbox row. A handler that raises is retried with exponential backoff and
jitter, on this context's queue only (never back through an event's fanout
exchange, which would reach the other subscribers again; see
``Topology.retry_route``); after
``BUS_MAX_RETRIES`` the message becomes a dead letter. A message that can
never succeed (bad envelope, unknown type, data that breaks the contract)
becomes a dead letter at once.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import Retry
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from pydantic import ValidationError

from messaging.broker import Outgoing, publish_confirmed
from messaging.contracts import Envelope
from messaging.dead_letters import as_uuid, dead_letter_record
from messaging.inbox import handle_once
from messaging.models import DeadLetter
from messaging.outbox import OPERATOR_SOURCE
from messaging.registry import registry
from messaging.task_message import ENVELOPE_ARGUMENT
from messaging.topology import Topology, consumer_queue_name

logger = logging.getLogger(__name__)


class HandlerFailedError(Exception):
    """A handler raised; the message may succeed on a later attempt."""

    def __init__(self, handler_name: str) -> None:
        super().__init__(f"handler {handler_name} failed")
        self.handler_name = handler_name


def consume(body: Any, *, context: str, headers: dict | None = None, attempts: int = 0) -> dict:
    """Deliver one message body to ``context``'s handlers.

    Returns what happened; raises ``HandlerFailedError`` (chained to the
    handler's exception) when a handler failed and the message may be retried.
    """

    def park(reason: str, error, **fields) -> dict:
        dead_letter_record(
            reason=reason, context=context, body=body, error=error,
            headers=headers, attempts=attempts, **fields,
        )
        logger.error("dead-lettered a message for %s: %s", context, reason)
        return {"context": context, "dead_lettered": reason}

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
    senders = {*registry.contexts(), *(c.context() for c in registry.contracts), OPERATOR_SOURCE}
    if envelope.source not in senders:
        return f"source '{envelope.source}' is not a context of this platform"
    return None


def message_task(task, *args, **kwargs) -> dict:
    """Body of every message task (one Celery task per message type)."""
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
        return consume(body, context=context, headers=headers, attempts=request.retries + 1)
    except HandlerFailedError as failure:
        error = failure.__cause__
        if request.retries >= settings.BUS_MAX_RETRIES:
            dead_letter_record(
                reason=DeadLetter.Reason.HANDLER_FAILED, context=context, consumer=failure.handler_name,
                message_id=body["id"], message_type=body["type"], body=body, headers=headers,
                error=error, attempts=request.retries + 1,
            )
            logger.error("dead-lettered %s %s after %d attempts", body["type"], body["id"], request.retries + 1)
            return {"context": context, "dead_lettered": DeadLetter.Reason.HANDLER_FAILED}
        queue = consumer_queue_name(context, body["kind"], body["type"])
        route, delay = Topology().retry_route(queue, request.retries)
        retry = Outgoing(body, exchange=route.exchange, routing_key=route.routing_key,
                         retries=request.retries + 1, delay=delay)
        publish_confirmed([retry])
        # The retry is on the broker: acknowledge this delivery, marked RETRY.
        raise Retry(exc=error, when=delay) from error


def register_message_tasks(app) -> None:
    """One Celery task per handled message type, named after the type."""
    for message_type in sorted({h.message_type for h in registry.handlers}):
        app.task(name=message_type, bind=True, acks_late=True, reject_on_worker_lost=True)(message_task)
