"""Delivering one message to one context's handlers: the bus's consumer side.

``consume`` takes a message body as the broker delivered it, checks it is an
envelope of a contract this context handles, and runs each of the context's
handlers for it in its own transaction with its inbox row
(``messaging.inbox.handle_once``), so a redelivered message is handled once.
A message that can never succeed (bad envelope, unknown type, data that
breaks the contract) becomes a dead letter at once; a handler that raises is
reported (``HandlerFailedError``) for the caller to retry, and on the last
attempt becomes a dead letter.

Contracts change while the platform runs, so a consumer reads what a rolling
deploy puts in its queues. It reads every older version its contract has
upcasters for, and hands its handlers the current one; it ignores data fields
its contract does not know (a tolerant reader: a field added by a newer
publisher breaks no older consumer). A message of a version newer than this
worker's code is held back (``NewerVersionError``): the caller puts it back on
the broker, uncounted, for a sibling that runs the newer code, and only once it
has waited ``BUS_NEWER_VERSION_HOLD`` does it become a dead letter, which an
operator retries after the deploy. The Celery task around it, which retries and
reports, is ``messaging.tasks``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from django.conf import settings
from django.utils import timezone
from pydantic import ValidationError

from messaging.contexts import OPERATOR_SOURCE
from messaging.contracts import Envelope, Message
from messaging.database import connection_lost
from messaging.dead_letters import as_uuid, dead_letter_record
from messaging.inbox import handle_once
from messaging.models import DeadLetter
from messaging.registry import Handler, registry

logger = logging.getLogger(__name__)

#: Characters of a dead letter's error repeated in the task's failure (the row has all of it).
DEAD_LETTERED_ERROR_LIMIT = 1000


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


class NewerVersionError(Exception):
    """The message is of a version newer than this worker's code: a sibling with newer code may handle it."""


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

    def park(refusal: Refusal) -> dict:
        row = dead_letter_record(
            reason=refusal.reason, context=context, body=body, error=refusal.error,
            headers=headers, attempts=attempts, **refusal.fields,
        )
        logger.error("dead-lettered a message for %s: %s", context, refusal.reason)
        return {"context": context, "dead_lettered": refusal.reason, "dead_letter": str(row.id), "error": row.error}

    verdict = accept(body, context)
    if isinstance(verdict, Newer):
        if not verdict.held_too_long():
            raise NewerVersionError(verdict.error)
        verdict = verdict.as_refusal()
    if isinstance(verdict, Refusal):
        return park(verdict)
    envelope, message, handlers = verdict.envelope, verdict.message, verdict.handlers
    fields = {"message_id": envelope.id, "message_type": envelope.type}
    handled, duplicates = [], []
    for handler in handlers:
        try:
            ran = handle_once(envelope, message, handler)
        except Exception as exc:
            if not connection_lost(exc):  # that one the caller waits out, and says so
                # Its traceback, at each attempt: the dead letter keeps only the last one's.
                logger.warning("handler %s failed on attempt %d", handler.name, attempts, exc_info=True)
            if last_attempt and not connection_lost(exc):
                return park(Refusal(DeadLetter.Reason.HANDLER_FAILED, exc, {"consumer": handler.name, **fields}))
            raise HandlerFailedError(handler.name) from exc
        (handled if ran else duplicates).append(handler.name)
    return {"context": context, "handled": handled, "duplicates": duplicates}


@dataclasses.dataclass(frozen=True)
class Accepted:
    """A message this context can handle: its envelope, its data as the contract, its handlers here."""

    envelope: Envelope
    message: Message
    handlers: list[Handler]


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a message can never be handled here: a dead letter's reason, error and identifying fields."""

    reason: str
    error: object
    fields: dict


@dataclasses.dataclass(frozen=True)
class Newer:
    """A message of a version newer than this worker's contract: not to be handled by this code."""

    envelope: Envelope
    known_version: int

    @property
    def error(self) -> str:
        return (f"version {self.envelope.version} of {self.envelope.type} is newer than this worker's "
                f"(version {self.known_version}): held back for a worker that knows it")

    def held_too_long(self) -> bool:
        """True once it has waited ``BUS_NEWER_VERSION_HOLD`` since it was written: no newer worker came."""
        return timezone.now() - self.envelope.time > settings.BUS_NEWER_VERSION_HOLD

    def as_refusal(self) -> Refusal:
        return Refusal(DeadLetter.Reason.NEWER_VERSION,
                       f"{self.error}, but none took it in {settings.BUS_NEWER_VERSION_HOLD} "
                       "(BUS_NEWER_VERSION_HOLD): retry it once this context's workers run the newer code",
                       {"message_id": self.envelope.id, "message_type": self.envelope.type})


def accept(body: Any, context: str) -> Accepted | Refusal | Newer:
    """Check ``body`` is an envelope of a contract ``context`` handles, with data that keeps the contract.

    Data of an older version is upcast to the current one; fields the contract does
    not know are left out (they are refused at publish, never at consume).
    """
    try:
        envelope = Envelope.model_validate(body)
    except ValidationError as exc:
        message_id = body.get("id") if isinstance(body, dict) else None
        return Refusal(DeadLetter.Reason.INVALID_ENVELOPE, exc, {"message_id": as_uuid(message_id)})
    fields = {"message_id": envelope.id, "message_type": envelope.type}
    contract = registry.contract_for(envelope.type)
    handlers = registry.handlers_for(envelope.type, context)
    if contract is None or not handlers:
        return Refusal(DeadLetter.Reason.UNKNOWN_TYPE, f"no handler for '{envelope.type}' in context '{context}'", fields)
    disagreement = _disagreement_with_registry(envelope, contract)
    if disagreement:
        return Refusal(DeadLetter.Reason.INVALID_ENVELOPE, disagreement, fields)
    if envelope.version > contract.version:
        return Newer(envelope, known_version=contract.version)
    if envelope.version < contract.oldest_readable_version():
        return Refusal(DeadLetter.Reason.INVALID_ENVELOPE, (
            f"version {envelope.version} of {envelope.type}; this worker reads versions "
            f"{contract.oldest_readable_version()} to {contract.version} (no upcaster from version "
            f"{contract.oldest_readable_version() - 1})"), fields)
    try:
        data = contract.upcast(envelope.data, envelope.version)
    except Exception as exc:  # an upcaster is the contract owner's code: its failure is the message's refusal
        return Refusal(DeadLetter.Reason.INVALID_DATA,
                       f"upcasting version {envelope.version} of {envelope.type} failed: {type(exc).__name__}: {exc}",
                       fields)
    try:
        message = contract.model_validate({name: value for name, value in data.items() if name in contract.model_fields})
    except ValidationError as exc:
        return Refusal(DeadLetter.Reason.INVALID_DATA, exc, fields)
    return Accepted(envelope, message, handlers)


def _disagreement_with_registry(envelope: Envelope, contract) -> str | None:
    """Why the envelope's kind or source cannot be this contract's, or None.

    A message that lies about its kind would be retried to a queue that does not
    exist (an event as a command goes to ``<context>.commands``); one that lies
    about its source would speak in another context's name.
    """
    if envelope.kind != contract.kind:
        return f"kind '{envelope.kind}', but {envelope.type} is {'an' if contract.kind == 'event' else 'a'} {contract.kind}"
    if contract.kind == "event" and envelope.source != contract.context():
        return f"source '{envelope.source}', but {envelope.type} is an event of '{contract.context()}'"
    if contract.kind == "command" and envelope.source not in {*registry.contexts_known(), OPERATOR_SOURCE}:
        return f"source '{envelope.source}' is not a context of this platform"
    return None


