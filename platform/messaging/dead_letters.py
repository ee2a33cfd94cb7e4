"""Dead letters: messages a consumer gave up on, kept where a person sees them.

Three ways in: the consumer gives up on a message it could read (bad data,
unknown type, a handler failing after every retry); the worker cannot even
read it as a task (undecodable, a disallowed content type like pickle, an
unknown task name); or RabbitMQ dead-letters it (over the delivery limit
because a worker died each time), and the relay moves it from the
``dead-letters`` queue into this table. None of them is dropped silently.
"""

import base64
import json
import traceback as traceback_module
import uuid

from django.db import transaction

from messaging.models import DeadLetter
from messaging.topology import Topology, context_of_queue

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
) -> DeadLetter:
    if isinstance(error, BaseException):
        trace = "".join(traceback_module.format_exception(error))
        error_text = f"{type(error).__name__}: {error}"
    else:
        trace, error_text = "", error
    return DeadLetter.objects.create(
        reason=reason,
        context=context,
        consumer=consumer,
        message_id=message_id,
        message_type=message_type,
        body=body,
        headers=_json_safe(headers or {}),
        error=error_text,
        traceback=trace,
        attempts=attempts,
    )


def dead_letter_raw_message(message, *, reason: str, context: str, error: str, attempts: int = 0) -> DeadLetter:
    """Record a broker message as it arrived (a kombu ``Message``), never deserializing
    anything but JSON: a pickle body stays bytes on the page."""
    headers = dict(message.headers or {})
    body = _parse_body(message.body, message.content_type)
    # A Celery task message's body is [args, kwargs, embed]; the bus's envelope is kwargs["envelope"].
    if isinstance(body, list) and len(body) == 3 and isinstance(body[1], dict) and "envelope" in body[1]:
        body = body[1]["envelope"]
    return dead_letter_record(
        reason=reason,
        context=context,
        body=body,
        error=error,
        message_id=as_uuid(headers.get("id")),
        message_type=str(headers.get("task") or "")[:200],
        headers={**headers, "content_type": message.content_type},
        attempts=attempts,
    )


def collect_broker_dead_letters(channel, *, limit: int = 500) -> int:
    """Move messages RabbitMQ dead-lettered into the table; each is acked after its row commits."""
    queue = Topology().dead_letter_queue()(channel)
    for collected in range(limit):
        message = queue.get(no_ack=False)
        if message is None:
            return collected
        headers = message.headers or {}
        first_queue = _text(headers.get("x-first-death-queue"))
        why = _text(headers.get("x-first-death-reason"))
        with transaction.atomic():
            dead_letter_raw_message(
                message,
                reason=DeadLetter.Reason.BROKER,
                context=context_of_queue(first_queue) if first_queue else "",
                error=f"RabbitMQ dead-lettered it from {first_queue or 'an unknown queue'} ({why or 'no reason given'})",
                attempts=int(headers.get("x-delivery-count") or 0),
            )
        message.ack()
    return limit


def _parse_body(raw, content_type: str | None):
    """JSON as JSON; anything else as base64 of its bytes (text columns refuse NUL bytes)."""
    data = raw if isinstance(raw, bytes) else str(raw).encode()
    if content_type == "application/json":
        try:
            return json.loads(data)
        except ValueError:
            pass
    return {"base64": base64.b64encode(data[:RAW_BODY_LIMIT]).decode(), "size": len(data)}


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def as_uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
