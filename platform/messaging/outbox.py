"""Sending commands and publishing events: a row in the caller's transaction.

Every sender has an ``Outbox`` (a context's services make theirs with
``Outbox.for_module(__name__)``); its ``send`` and ``publish`` validate the message against its contract and write
an outbox row; they never talk to the broker. If the caller's transaction
rolls back, the message is gone with it; if it commits, the relay publishes
it (at least once). Invalid data raises ``MessageRejectedError`` and writes
nothing, as does data a database or a JSON reader would refuse: a NUL
character, a lone surrogate, NaN or infinity, nesting deeper than
``BUS_MAX_PAYLOAD_DEPTH``.

``deliver_at`` schedules a message: its row waits in the outbox, as any row
does, until that time, and survives restarts because it is only a row. The
relay publishes it once it is due (soon after, never before), so a handler
that receives it may still find the world changed: scheduled messages check
the state they act on, as every handler does.
"""

from __future__ import annotations

import datetime
import json
import math
import uuid
from typing import Any

from asgiref.local import Local
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone
from pydantic import ValidationError

from messaging import causation, tracing
from messaging.contexts import OPERATOR_SOURCE, context_of_module
from messaging.contracts import Command, Envelope, Event, Message
from messaging.models import OutboxMessage
from messaging.registry import registry
from messaging.topology import command_queue_name, event_exchange_name

#: PostgreSQL channel the relay listens on; NOTIFY is delivered at commit.
RELAY_CHANNEL = "messaging_outbox"


class MessageRejectedError(ValueError):
    """The message cannot be sent: unknown type, invalid data, unstorable, or too large."""


class Outbox:
    """Where one sender writes its messages: a bounded context, or the operator.

    A context's services make theirs once, from their module's name, as a
    logger is made::

        outbox = Outbox.for_module(__name__)   # in apps/basket/services.py: sends as basket
        outbox.send(PlaceOrder(...), correlation_id=order_id)

    The sender is fixed where the outbox is made, so a message written from a
    helper, a thread or a test carries the right ``source`` or fails with a
    clear error: a module outside every context, an event published by a
    context that does not own it, or a message sent while handling another
    context's message.
    """

    def __init__(self, source: str) -> None:
        #: The envelope's ``source``: a context's app label, or ``OPERATOR_SOURCE``.
        self.source = source

    @classmethod
    def for_module(cls, module_name: str) -> Outbox:
        """The outbox of the context whose app contains ``module_name`` (pass ``__name__``).

        Resolved at the first write, once Django has loaded every app.
        """
        return _ModuleOutbox(module_name)

    @classmethod
    def for_context(cls, context: str) -> Outbox:
        """The outbox of ``context``, named by its app label: for an operator speaking
        in its name on purpose (``publish_event --as-context``) and for tests."""
        return cls(context)

    @classmethod
    def operator(cls) -> Outbox:
        """The outbox of a person at a shell, a management command or the admin."""
        return cls(OPERATOR_SOURCE)

    def send(
        self, command: Command, *, correlation_id: uuid.UUID | None = None,
        deliver_at: datetime.datetime | None = None,
    ) -> Envelope:
        """Write ``command`` to the outbox, for the one context that owns it (not before ``deliver_at``)."""
        return self.send_many([command], correlation_id=correlation_id, deliver_at=deliver_at)[0]

    def publish(
        self, event: Event, *, correlation_id: uuid.UUID | None = None,
        deliver_at: datetime.datetime | None = None,
    ) -> Envelope:
        """Write ``event`` to the outbox, for every context subscribed to it (not before ``deliver_at``)."""
        return self.publish_many([event], correlation_id=correlation_id, deliver_at=deliver_at)[0]

    def send_many(
        self, commands: list[Command], *, correlation_id: uuid.UUID | None = None,
        deliver_at: datetime.datetime | None = None,
    ) -> list[Envelope]:
        """Write several commands in one INSERT: each as ``send`` would, all or none."""
        _expect(Command, commands)
        source = self._checked_source()
        return _write([_envelope(c, correlation_id=correlation_id, source=source) for c in commands], deliver_at)

    def publish_many(
        self, events: list[Event], *, correlation_id: uuid.UUID | None = None,
        deliver_at: datetime.datetime | None = None,
    ) -> list[Envelope]:
        """Write several events in one INSERT: each as ``publish`` would, all or none."""
        _expect(Event, events)
        source = self._checked_source()
        for event in events:
            # An event is a fact of the context that owns it: no one else states it.
            if type(event).context() != source:
                raise MessageRejectedError(
                    f"{source} cannot publish {type(event).type_name()}: an event is published by the "
                    f"context that owns it ({type(event).context()})"
                )
        return _write([_envelope(e, correlation_id=correlation_id, source=source) for e in events], deliver_at)

    def _checked_source(self) -> str:
        source = self.source
        # Once per outbox, not per message: its sender never changes, and listing the
        # contexts walks the registry (about 15 µs).
        if not self._source_known:
            if source != OPERATOR_SOURCE and source not in registry.contexts_known():
                raise MessageRejectedError(
                    f"'{source}' is not a context of this platform: known are {', '.join(sorted(registry.contexts_known()))}"
                )
            self._source_known = True
        handling = causation.current()
        if handling and handling[1] != source:
            # A handler's messages are its context's: another context's outbox here is a
            # service of that context called across the boundary.
            raise MessageRejectedError(
                f"written as {source} while {handling[1]} handles {handling[0].type} {handling[0].id}: "
                f"a handler sends through its own context's outbox"
            )
        return source

    #: Whether ``source`` was found among the platform's contexts (``_checked_source``).
    _source_known = False

    def __repr__(self) -> str:
        return f"<Outbox of {self.source}>"


class _ModuleOutbox(Outbox):
    """An outbox whose sender is the context containing a module, looked up at first use:
    a services module is imported while Django is still loading the apps."""

    def __init__(self, module_name: str) -> None:
        self.module_name = module_name
        self._source: str | None = None

    @property
    def source(self) -> str:
        if self._source is None:
            context = context_of_module(self.module_name)
            if context is None:
                raise ImproperlyConfigured(
                    f"Outbox.for_module({self.module_name!r}): that module is in no installed app; "
                    f"use Outbox.for_context(<app label>) or Outbox.operator()"
                )
            self._source = context
        return self._source

    def __repr__(self) -> str:
        return f"<Outbox of the context of {self.module_name}>"


def build(message_type: str, data: dict[str, Any], *, kind: str) -> Message:
    """The contract instance for ``data``, or a clear ``MessageRejectedError``."""
    contract = registry.contract_for(message_type)
    if contract is None or contract.kind != kind:
        known = sorted(c.type_name() for c in registry.contracts if c.kind == kind)
        raise MessageRejectedError(f"Unknown {kind} type '{message_type}'. Known: {', '.join(known)}")
    return _validated(contract, data)


def _expect(base: type[Message], messages: list) -> None:
    for message in messages:
        if not isinstance(message, base):
            verb = "send" if base is Command else "publish"
            raise MessageRejectedError(f"{verb}() takes a {base.__name__}, not {type(message).__name__}")


def _validated(contract: type[Message], data: dict[str, Any]) -> Message:
    try:
        return contract.model_validate(data)
    except ValidationError as exc:
        raise MessageRejectedError(f"Invalid data for {contract.type_name()}:\n{exc}") from exc


def _refuse_unstorable(message_type: str, data: dict[str, Any]) -> None:
    """Raise ``MessageRejectedError`` for what PostgreSQL's jsonb or a consumer's JSON reader refuses.

    Looked for in the data as validated, before it becomes JSON: serializing
    would quietly turn NaN into null, and fail on deep nesting with a confusing
    error. A JSON reader gives up on deep nesting (Python's at about a thousand
    levels, including the envelope and task message around the data).
    """
    pending: list[tuple[Any, str, int]] = [(data, "data", 1)]
    while pending:
        value, path, depth = pending.pop()
        problem = None
        if isinstance(value, str):
            problem = _unstorable_text(value)
        elif isinstance(value, float) and not math.isfinite(value):
            problem = f"{value} is not a JSON number"
        elif isinstance(value, dict | list | tuple | set | frozenset) and depth > settings.BUS_MAX_PAYLOAD_DEPTH:
            problem = f"nesting deeper than {settings.BUS_MAX_PAYLOAD_DEPTH} levels (BUS_MAX_PAYLOAD_DEPTH)"
        elif isinstance(value, dict):
            pending.extend((key, f"a key of {path}", depth) for key in value)
            pending.extend((item, f"{path}[{key!r}]", depth + 1) for key, item in value.items())
        elif isinstance(value, list | tuple | set | frozenset):
            pending.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))
        if problem:
            raise MessageRejectedError(f"{message_type} data cannot be stored: {problem} at {path}")


def _unstorable_text(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a character that is not valid Unicode (a lone surrogate)"
    return None


def _envelope(message: Message, *, correlation_id: uuid.UUID | None, source: str) -> dict[str, Any]:
    """The envelope of ``message``, as the JSON the outbox row and the broker carry."""
    contract = type(message)
    # Validate again: an instance made with model_construct() skipped validation.
    validated = _validated(contract, message.model_dump())
    _refuse_unstorable(contract.type_name(), validated.model_dump())
    data = validated.model_dump(mode="json")
    try:
        size = len(json.dumps(data, allow_nan=False).encode())
    except ValueError as exc:  # an integer too long to write (sys.get_int_max_str_digits)
        raise MessageRejectedError(f"{contract.type_name()} data cannot be written as JSON: {exc}") from exc
    if size > settings.BUS_MAX_PAYLOAD_BYTES:
        raise MessageRejectedError(
            f"{contract.type_name()} data is {size} bytes, over the limit of "
            f"{settings.BUS_MAX_PAYLOAD_BYTES} (BUS_MAX_PAYLOAD_BYTES)"
        )
    handling = causation.current()
    cause = handling[0] if handling else None
    message_id = uuid.uuid4()
    attributes = {
        "id": message_id, "type": contract.type_name(), "kind": contract.kind, "source": source,
        "correlationid": correlation_id or (cause.correlationid if cause else message_id),
    }
    if tracing.enabled():
        destination = (event_exchange_name(contract.type_name()) if contract.kind == "event"
                       else command_queue_name(contract.context()))
        attributes.update(tracing.created(attributes, destination=destination))
    return Envelope(
        **attributes,
        version=contract.version,
        time=timezone.now(),
        causationid=cause.id if cause else None,
        data=data,
    )


def _write(envelopes: list[Envelope], deliver_at: datetime.datetime | None) -> list[Envelope]:
    # Unscheduled rows take the database's clock (the column's default), the
    # one the relay compares with: a web server's clock running ahead must not
    # hold its messages back.
    scheduled = {} if deliver_at is None else {"available_at": _aware(deliver_at)}
    OutboxMessage.objects.bulk_create([_row(envelope, **scheduled) for envelope in envelopes])
    nudge_relay()
    return envelopes


def redeliver(envelope: Envelope, *, context: str) -> OutboxMessage:
    """Write a message again, with its own id, for ``context``'s queue only (a dead
    letter's retry): published by the relay like any row, in the caller's transaction."""
    return redeliver_many([envelope], context=context)[0]


def redeliver_many(envelopes: list[Envelope], *, context: str) -> list[OutboxMessage]:
    """Write several messages again for ``context``'s queue only, in one INSERT: each as
    ``redeliver`` would, in this order (a new subscriber's catch-up, ``messaging.catch_up``)."""
    rows = OutboxMessage.objects.bulk_create([_row(envelope, redeliver_to=context) for envelope in envelopes])
    nudge_relay()
    return rows


def _row(envelope: Envelope, **fields) -> OutboxMessage:
    return OutboxMessage(
        message_id=envelope.id,
        kind=envelope.kind,
        message_type=envelope.type,
        correlation_id=envelope.correlationid,
        causation_id=envelope.causationid,
        source=envelope.source,
        envelope=envelope.to_json_dict(),
        **fields,
    )


def _aware(deliver_at: datetime.datetime) -> datetime.datetime:
    if not isinstance(deliver_at, datetime.datetime) or timezone.is_naive(deliver_at):
        raise MessageRejectedError(f"deliver_at must be a timezone-aware datetime, not {deliver_at!r}")
    return deliver_at


def nudge_relay() -> None:
    """Wake the relays once this transaction commits (at once outside one); their poll is the safety net.

    One NOTIFY per committed transaction, however many messages it wrote: each
    write leaves an on-commit callback (kept or dropped with its savepoint, as
    Django does), and the first to run at commit sends the NOTIFY for them all.
    A transaction rolled back sends nothing. Robust callbacks: a NOTIFY that
    fails after the commit is logged, never raised into the caller whose
    transaction did commit (the poll then publishes the rows).
    """
    if connection.vendor != "postgresql":
        return
    if not connection.in_atomic_block and not connection.get_autocommit():
        # Manual transaction management (set_autocommit(False)) has no on-commit hooks; a
        # NOTIFY inside the transaction is what PostgreSQL itself holds until COMMIT, and
        # drops on rollback.
        _notify_relays()
        return
    transaction.on_commit(_pending_nudge().send, robust=True)


class _Nudge:
    """The NOTIFY one transaction owes the relays, sent once."""

    def __init__(self) -> None:
        self.sent = False

    def send(self) -> None:
        if self.sent:
            return
        self.sent = True
        _notify_relays()


def _notify_relays() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [RELAY_CHANNEL])


#: Where Django keeps a connection (per thread, per async context): the nudge its transaction's callbacks share.
_nudges = Local()


def _pending_nudge() -> _Nudge:
    # A nudge not sent yet is shared by every write until a commit sends it; one left
    # by a rolled-back transaction is simply taken over by the next.
    nudge = getattr(_nudges, "pending", None)
    if nudge is None or nudge.sent:
        nudge = _nudges.pending = _Nudge()
    return nudge
