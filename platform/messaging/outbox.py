"""Sending commands and publishing events: a row in the caller's transaction.

``send`` and ``publish`` validate the message against its contract and write
an outbox row; they never talk to the broker. If the caller's transaction
rolls back, the message is gone with it; if it commits, the relay publishes
it (at least once). Invalid data raises ``MessageRejectedError`` and writes
nothing.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone
from pydantic import ValidationError

from messaging import causation
from messaging.contracts import Command, Envelope, Event, Message
from messaging.models import OutboxMessage
from messaging.registry import context_of_module, registry

#: PostgreSQL channel the relay listens on; NOTIFY is delivered at commit.
RELAY_CHANNEL = "messaging_outbox"
#: Source of a command sent from outside any context (shell, management command).
OPERATOR_SOURCE = "operator"


class MessageRejectedError(ValueError):
    """The message cannot be sent: unknown type, invalid data, or too large."""


def send(command: Command, *, correlation_id: uuid.UUID | None = None) -> Envelope:
    """Write ``command`` to the outbox, for the one context that owns it."""
    if not isinstance(command, Command):
        raise MessageRejectedError(f"send() takes a Command, not {type(command).__name__}")
    return _write(command, correlation_id=correlation_id, source=_sending_context())


def publish(event: Event, *, correlation_id: uuid.UUID | None = None) -> Envelope:
    """Write ``event`` to the outbox, for every context subscribed to it."""
    if not isinstance(event, Event):
        raise MessageRejectedError(f"publish() takes an Event, not {type(event).__name__}")
    # An event is a fact of the context that owns it, whoever calls this.
    return _write(event, correlation_id=correlation_id, source=type(event).context())


def build(message_type: str, data: dict[str, Any], *, kind: str) -> Message:
    """The contract instance for ``data``, or a clear ``MessageRejectedError``."""
    contract = registry.contract_for(message_type)
    if contract is None or contract.kind != kind:
        known = sorted(c.type_name() for c in registry.contracts if c.kind == kind)
        raise MessageRejectedError(f"Unknown {kind} type '{message_type}'. Known: {', '.join(known)}")
    return _validated(contract, data)


def _validated(contract: type[Message], data: dict[str, Any]) -> Message:
    try:
        return contract.model_validate(data)
    except ValidationError as exc:
        raise MessageRejectedError(f"Invalid data for {contract.type_name()}:\n{exc}") from exc


def _write(message: Message, *, correlation_id: uuid.UUID | None, source: str) -> Envelope:
    contract = type(message)
    # Validate again: an instance made with model_construct() skipped validation.
    data = _validated(contract, message.model_dump()).model_dump(mode="json")
    size = len(json.dumps(data).encode())
    if size > settings.BUS_MAX_PAYLOAD_BYTES:
        raise MessageRejectedError(
            f"{contract.type_name()} data is {size} bytes, over the limit of "
            f"{settings.BUS_MAX_PAYLOAD_BYTES} (BUS_MAX_PAYLOAD_BYTES)"
        )
    handling = causation.current()
    cause = handling[0] if handling else None
    message_id = uuid.uuid4()
    envelope = Envelope(
        id=message_id,
        type=contract.type_name(),
        kind=contract.kind,
        version=contract.version,
        source=source,
        time=timezone.now(),
        correlation_id=correlation_id or (cause.correlation_id if cause else message_id),
        causation_id=cause.id if cause else None,
        data=data,
    )
    OutboxMessage.objects.create(
        message_id=envelope.id,
        kind=envelope.kind,
        message_type=envelope.type,
        correlation_id=envelope.correlation_id,
        envelope=envelope.to_json_dict(),
    )
    nudge_relay()
    return envelope


def nudge_relay() -> None:
    """Wake the relays when this transaction commits (their poll is the safety net)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [RELAY_CHANNEL])


def _sending_context() -> str:
    """The context sending a command: the one handling a message, else the calling context.

    The calling context is the innermost bounded context on the call stack
    (a context's service calling ``send``); from anywhere else, a shell, a
    management command or the admin, the source is ``operator``.
    """
    handling = causation.current()
    if handling:
        return handling[1]
    contexts = registry.contexts_known()
    frame = sys._getframe(2)
    while frame is not None:
        context = context_of_module(frame.f_globals.get("__name__", ""))
        if context in contexts:
            return context
        frame = frame.f_back
    return OPERATOR_SOURCE
