"""Dead letters: messages a consumer gave up on, kept where a person sees them.

Three ways in: the consumer gives up on a message it could read (bad data,
unknown type, a handler failing after every retry); the worker cannot even
read it as a task (undecodable, a disallowed content type like pickle, an
unknown task name); or the broker dead-letters it (over the delivery limit
because a worker died each time, or rejected when this table could not be
written), and the relay moves it from the broker's ``dead-letters`` queue
into this table (RabbitMQ and Redis; the embedded broker has none). None of them is dropped silently.

A row never holds more of a body than ``BUS_DEAD_LETTER_BODY_LIMIT`` bytes of
JSON: a larger body is kept as the start of its JSON, flagged, with its size.
"""

import base64
import json
import traceback as traceback_module
import uuid

from django.conf import settings
from django.db import DatabaseError, transaction

from messaging.database import connection_lost
from messaging.models import DeadLetter
from messaging.storable import storable
from messaging.task_message import envelope_in, message_id_in, message_type_in
from messaging import brokers
from messaging.topology import context_of_queue

#: Most bytes kept of a body that is not JSON.
RAW_BODY_LIMIT = 10_000


def dead_letter_record(
    *,
    reason: str,
    context: str,
    body,
    error: BaseException | str,
    consumer: str = "",
    message_id=None,
    message_type: str = "",
    headers: dict | None = None,
    attempts: int = 0,
    body_size: int | None = None,
) -> DeadLetter:
    """Save a dead letter; ``body_size`` is the size as received, if the body was bytes then."""
    if isinstance(error, BaseException):
        trace = "".join(traceback_module.format_exception(error))
        error_text = f"{type(error).__name__}: {error}"
        exception_type = type(error).__name__
    else:
        trace, error_text, exception_type = "", error, ""
    kept, json_size, truncated = _capped(storable(body))
    return DeadLetter.objects.create(
        reason=reason,
        context=storable(context),
        consumer=storable(consumer),
        message_id=message_id,
        message_type=storable(message_type),
        correlation_id=as_uuid(body.get("correlationid")) if isinstance(body, dict) else None,
        exception_type=exception_type,
        body=kept,
        body_size=json_size if body_size is None else body_size,
        body_truncated=truncated,
        headers=storable(headers or {}),
        error=storable(error_text),
        traceback=storable(trace),
        attempts=attempts,
    )


def _capped(body):
    """(what to keep, bytes of its JSON, truncated?): the body whole while its JSON fits
    ``BUS_DEAD_LETTER_BODY_LIMIT``, else the start of that JSON as text."""
    text = json.dumps(body)  # ASCII (ensure_ascii), so characters are bytes
    limit = settings.BUS_DEAD_LETTER_BODY_LIMIT
    if len(text) <= limit:
        return body, len(text), False
    return text[:limit], len(text), True


def dead_letter_raw_message(message, *, reason: str, context: str, error: str, attempts: int = 0) -> DeadLetter:
    """Record a broker message as it arrived (a kombu ``Message``), never deserializing
    anything but JSON: a pickle body stays bytes on the page.

    Whatever its headers and body hold, a row is written: if they cannot be
    stored as they are, the body's bytes and the error are kept instead.
    """
    headers = message.headers if isinstance(message.headers, dict) else {"headers": repr(message.headers)}
    fields = {
        "reason": reason,
        "context": context,
        "error": error,
        "attempts": attempts,
        "message_id": as_uuid(message_id_in(headers)),
        "message_type": _text(message_type_in(headers))[:200],
        "body_size": len(_as_bytes(message.body)),
    }
    try:
        with transaction.atomic():
            return dead_letter_record(
                **fields,
                body=envelope_in(_parse_body(message.body, message.content_type)),
                headers={**headers, "content_type": message.content_type},
            )
    except DatabaseError as exc:
        if connection_lost(exc):
            raise  # the database is away: nothing could be written
    except Exception:  # a value the JSON encoder or the database refuses: never block the queue
        pass
    with transaction.atomic():
        return dead_letter_record(
            **fields,
            body=_parse_body(message.body, content_type=None),
            headers={"content_type": _text(message.content_type), "id": _text(message_id_in(headers))},
        )


def collect_broker_dead_letters(channel, *, limit: int = 500, collected=lambda row: None) -> int:
    """Move messages the broker dead-lettered into the table; each is acked after its row commits,
    then handed to ``collected``."""
    queue = brokers.current().dead_letter_queue()(channel)
    for count in range(limit):
        message = queue.get(no_ack=False)
        if message is None:
            return count
        row = _record_broker_dead_letter(message)
        message.ack()
        collected(row)
    return limit


def _record_broker_dead_letter(message) -> DeadLetter:
    # x-death is newest first; the x-first-death-* headers would name the retry
    # queue a message once expired from, not the queue that gave up on it.
    headers = message.headers if isinstance(message.headers, dict) else {}
    deaths = headers.get("x-death") or [{}]
    queue_name, why = _text(deaths[0].get("queue")), _text(deaths[0].get("reason"))
    return dead_letter_raw_message(
        message,
        reason=DeadLetter.Reason.BROKER,
        context=context_of_queue(queue_name) if queue_name else "",
        error=f"{brokers.current().label} dead-lettered it from {queue_name or 'an unknown queue'} ({why or 'no reason given'})",
        attempts=settings.BUS_DELIVERY_LIMIT + 1 if why == "delivery_limit" else 0,
    )


def _parse_body(raw, content_type: str | None):
    """JSON as JSON; anything else as base64 of its bytes (text columns refuse NUL bytes)."""
    data = _as_bytes(raw)
    if content_type == "application/json":
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            pass
    return {"base64": base64.b64encode(data[:RAW_BODY_LIMIT]).decode(), "size": len(data)}


def _as_bytes(raw) -> bytes:
    return raw if isinstance(raw, bytes) else str(raw).encode()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def as_uuid(value) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
