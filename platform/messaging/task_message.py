"""The Celery task message the bus sends and accepts, and what makes one unacceptable.

The bus speaks Celery's protocol 2 only: headers naming the task (the message
type) and its id (a UUID), and a JSON body ``[args, kwargs, embed]`` whose one
keyword argument is the envelope. Celery's worker trusts its headers: a list
where it expects a string, a number where it expects a pair, a missing id
each raise inside its consumer and stop the whole worker, and an ``expires``
in the past makes it drop the message as revoked. ``problem_with`` answers
for any delivery, never raising, whether the worker may be handed it; what it
refuses becomes a dead letter (``messaging.worker``).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Any

from django.conf import settings
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

#: The keyword argument that carries the envelope in the task message.
ENVELOPE_ARGUMENT = "envelope"
#: What Celery may find in a body's ``embed``; the bus sends it empty, and a
#: callback there would make the worker send tasks a stranger chose.
EMBED_KEYS = {"callbacks", "errbacks", "chain", "chord"}
#: An ``eta`` further ahead than the longest retry wait, plus this margin, is not
#: the bus's own: the worker would hold the message (and its prefetch slot) until then.
ETA_MARGIN = datetime.timedelta(minutes=1)


def _uuid_text(value: str) -> str:
    uuid.UUID(value)
    return value


def _eta_text(value: str) -> str:
    eta = datetime.datetime.fromisoformat(value)
    if eta.tzinfo is None:
        eta = eta.replace(tzinfo=datetime.UTC)
    latest = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=settings.BUS_RETRY_BACKOFF_MAX)
    if eta > latest + ETA_MARGIN:
        raise ValueError("further ahead than any retry of the bus waits")
    return value


_Number = StrictInt | StrictFloat


class _TaskHeaders(BaseModel):
    """The protocol-2 headers Celery's worker reads, as the bus sends them.

    Other headers (the broker's ``x-death``, ``x-delivery-count``) pass: Celery
    only copies them onto the request.
    """

    model_config = ConfigDict(extra="allow")

    task: StrictStr = Field(min_length=1, max_length=200)
    id: Annotated[StrictStr, AfterValidator(_uuid_text)]
    retries: StrictInt = Field(default=0, ge=0, le=1_000)
    timelimit: tuple[_Number | None, _Number | None] | None = None
    eta: Annotated[StrictStr, AfterValidator(_eta_text)] | None = None
    expires: None = None
    lang: StrictStr | None = None
    root_id: StrictStr | None = None
    parent_id: StrictStr | None = None
    group: StrictStr | None = None
    group_index: StrictInt | None = None
    shadow: StrictStr | None = None
    origin: StrictStr | None = None
    argsrepr: StrictStr | None = None
    kwargsrepr: StrictStr | None = None
    ignore_result: StrictBool = False
    replaced_task_nesting: StrictInt = Field(default=0, ge=0)
    stamped_headers: None = None
    stamps: None = None


def problem_with(message) -> str | None:
    """Why a delivery (a kombu ``Message``) is not a task message the bus accepts, or None.

    Only the shape is judged here; the envelope inside is validated against
    its contract when the task runs (``messaging.consumer``).
    """
    try:
        return _problem_with(message)
    except Exception as exc:  # whatever arrives, the answer is an answer
        return f"unreadable delivery: {type(exc).__name__}: {exc}"


def _problem_with(message) -> str | None:
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return "not a Celery protocol-2 task message (no task header)"
    try:
        _TaskHeaders.model_validate(headers)
    except ValidationError as exc:
        return f"task headers the bus does not send: {_first_errors(exc)}"
    try:
        body = message.decode()
    except Exception as exc:
        return f"cannot decode a {message.content_type!r} body: {type(exc).__name__}: {exc}"
    if not (isinstance(body, list) and len(body) == 3):
        return "task message body is not [args, kwargs, embed]"
    args, kwargs, embed = body
    if not (isinstance(args, list) and isinstance(kwargs, dict) and isinstance(embed, dict)):
        return "task message body is not [args, kwargs, embed]"
    if set(embed) - EMBED_KEYS or any(embed.values()):
        return "task message embeds callbacks, a chain or a chord: the bus sends none"
    return None


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    # Short and without the values: a header may hold anything, personal data included.
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'headers'}: {e['msg']}" for e in exc.errors()[:limit])


def envelope_in(body: Any) -> Any:
    """The envelope inside a decoded task-message body, or the body itself if it holds none."""
    if isinstance(body, list) and len(body) == 3 and isinstance(body[1], dict) and ENVELOPE_ARGUMENT in body[1]:
        return body[1][ENVELOPE_ARGUMENT]
    return body
