"""The Celery task message the bus sends and accepts, and what makes one unacceptable.

The one owner of that format: how an envelope becomes a task message
(``for_envelope``; ``TaskMessageTemplate`` for one stored as JSON text, as the
relay publishes them: the same message without decoding the envelope), how the envelope is read back (``envelope_from_arguments``
in the task, ``envelope_in`` from a raw body), what its headers say
(``message_id_in``, ``message_type_in``, ``headers_of_request``), the task id of
one context's delivery (``delivery_id``, ``as_delivery``), and which deliveries
a worker may be handed (``problem_with``, by the worker's ``IntakePolicy``).
Every other module asks here; this one imports nothing else of the bus, so the
brokers' adapters, below everything else, can build messages with it.

The bus speaks Celery's protocol 2 only: headers naming the task (the message
type) and its id (a UUID), and a JSON body ``[args, kwargs, embed]`` whose one
keyword argument is the envelope. Flower and django-celery-results thus see
commands and events alike, as tasks named after their type. Celery's worker trusts its headers: a list
where it expects a string, a number where it expects a pair, a missing id
each raise inside its consumer and stop the whole worker, and an ``expires``
in the past makes it drop the message as revoked. ``problem_with`` answers
for any delivery, never raising, whether the worker may be handed it; what it
refuses becomes a dead letter (``messaging.worker``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from typing import Annotated, Any

from celery import current_app
from django.conf import settings
from kombu.utils.json import dumps
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
)

#: The keyword argument that carries the envelope in the task message.
ENVELOPE_ARGUMENT = "envelope"
#: What Celery may find in a body's ``embed``; the bus sends it empty, and a
#: callback there would make the worker send tasks a stranger chose.
EMBED_KEYS = {"callbacks", "errbacks", "chain", "chord"}
#: An ``eta`` further ahead than the longest retry wait, plus this margin, is not
#: the bus's own: the worker would hold the message (and its prefetch slot) until then.
ETA_MARGIN = datetime.timedelta(minutes=1)
#: An eta this far in the past is no retry's either (and Celery mishandles dates near year 1).
ETA_PAST_LIMIT = datetime.timedelta(days=1)


def _uuid_text(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValueError("not a UUID") from None
    return value


@dataclasses.dataclass(frozen=True)
class IntakePolicy:
    """What one worker may be handed: made once, when the worker starts (``messaging.worker``)."""

    #: The context whose handlers the worker runs.
    context: str
    #: The message types (task names) it has a handler for.
    handled_types: frozenset[str]
    #: Whether a retry may carry an ``eta``: only where retries wait in the worker
    #: (a Celery countdown); on RabbitMQ they wait in retry queues and carry none.
    eta_allowed: bool
    #: The longest a retry of the bus waits (``BUS_RETRY_BACKOFF_MAX``).
    longest_retry_wait: datetime.timedelta


def _eta_text(value: str, info: ValidationInfo) -> str:
    policy: IntakePolicy = info.context["policy"]
    if not policy.eta_allowed:
        raise ValueError("the bus sends no eta on this broker")
    try:
        eta = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO 8601 time") from None
    if eta.tzinfo is None:
        eta = eta.replace(tzinfo=datetime.UTC)
    now = datetime.datetime.now(datetime.UTC)
    latest = now + policy.longest_retry_wait + ETA_MARGIN
    if not now - ETA_PAST_LIMIT <= eta <= latest:
        raise ValueError("outside the times a retry of the bus waits until")
    return value


@dataclasses.dataclass(frozen=True)
class TaskMessage:
    """A task message ready for a kombu producer's ``publish``."""

    body: tuple
    headers: dict[str, Any]
    #: AMQP properties (content type and encoding, ``correlation_id``).
    properties: dict[str, Any]


def for_envelope(envelope: dict[str, Any], *, retries: int = 0, countdown: float | None = None) -> TaskMessage:
    """The task message that carries ``envelope``: task name = its type, task id = its id.

    ``countdown`` makes the worker hold it back (a retry where retries wait in the worker).
    """
    message = current_app.amqp.as_task_v2(
        envelope["id"],
        envelope["type"],
        kwargs={ENVELOPE_ARGUMENT: envelope},
        retries=retries,
        countdown=countdown,
        # The message's header wins over the task's own setting in the worker:
        # without this, CELERY_TASK_IGNORE_RESULT changes nothing for bus messages.
        ignore_result=settings.CELERY_TASK_IGNORE_RESULT,
        # Logs and Flower show the type and ids, never the payload.
        argsrepr="()",
        kwargsrepr=kwargs_repr(envelope["type"], envelope["id"]),
    )
    return TaskMessage(
        body=message.body,
        headers=_without_empty(message.headers),
        # The AMQP correlation-id names the business conversation, where Celery puts the
        # task id. Celery's worker and result backend key on the ``id`` header; only its
        # rpc:// result backend reads this property, and the bus does not use that backend.
        # (An envelope written before the attribute's rename has none: no property then.)
        properties={**message.properties, "correlation_id": envelope.get("correlationid")},
    )


#: How the bus serialises a task message: JSON, UTF-8 (Celery's own default).
CONTENT_TYPE, CONTENT_ENCODING = "application/json", "utf-8"


@dataclasses.dataclass(frozen=True)
class StoredEnvelope:
    """An envelope as the outbox stores it: its JSON text, with the attributes a task
    message names read from it (``id``, ``type``, ``correlationid``: None if it has none)."""

    text: str
    id: str
    type: str
    correlationid: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return json.loads(self.text)


@dataclasses.dataclass(frozen=True)
class WireMessage:
    """A task message serialised: the body's bytes, its headers and its properties."""

    body: bytes
    headers: dict[str, Any]
    #: AMQP properties (``correlation_id``, ``reply_to``); the content type and encoding
    #: are ``CONTENT_TYPE`` and ``CONTENT_ENCODING``.
    properties: dict[str, Any]


class TaskMessageTemplate:
    """The task message of one message type, first sent (no retry), prepared once:
    ``fill`` puts a stored envelope's id into its headers and its JSON text,
    as it is, into the body. What it gives is what ``for_envelope`` gives for that
    envelope, serialised; only the decoding and encoding of the envelope are saved.

    Made from ``for_envelope`` itself (of a stand-in envelope of that type), so
    the two never drift apart: a header that names the stand-in's id names the
    message's, every other header is the same for every message of the type.
    """

    #: The stand-in envelope's id and its JSON text in the body (neither can occur in a
    #: real header or body: the id is no UUID, the text would be an escaped string).
    _ID, _ENVELOPE = "message-id-of-the-task-message-template", "envelope-of-the-task-message-template"

    def __init__(self, message_type: str) -> None:
        message = for_envelope({"id": self._ID, "type": message_type})
        self.message_type = message_type
        self._headers = {name: value for name, value in message.headers.items() if not _names(value, self._ID)}
        self._headers_with_id = {name: value for name, value in message.headers.items() if _names(value, self._ID)}
        self._properties = {name: value for name, value in message.properties.items() if name != "correlation_id"}
        args, kwargs, embed = message.body
        before, after = dumps([args, {**kwargs, ENVELOPE_ARGUMENT: self._ENVELOPE}, embed]).split(
            json.dumps(self._ENVELOPE))
        self._before, self._after = before.encode(CONTENT_ENCODING), after.encode(CONTENT_ENCODING)

    def fill(self, envelope: StoredEnvelope) -> WireMessage:
        if envelope.type != self.message_type:
            raise ValueError(f"a {envelope.type} envelope in the task message of {self.message_type}")
        headers = {**self._headers, **{name: value.replace(self._ID, envelope.id)
                                       for name, value in self._headers_with_id.items()}}
        return WireMessage(
            body=self._before + envelope.text.encode(CONTENT_ENCODING) + self._after,
            headers=headers,
            properties={**self._properties, "correlation_id": envelope.correlationid},
        )


def _names(value: Any, message_id: str) -> bool:
    return isinstance(value, str) and message_id in value


def _without_empty(headers: dict[str, Any]) -> dict[str, Any]:
    """The task headers that say something: Celery's worker reads every other one
    with a default, and encoding a dozen empty AMQP table entries per message was
    the relay's largest cost per row."""
    return {name: value for name, value in headers.items() if value not in (None, [], {}, [None, None])}


def envelope_from_arguments(args: tuple, kwargs: dict[str, Any]) -> Any:
    """What the task was given: the envelope, or, if it was given anything else, all of it
    (kept whole for the dead letter it becomes)."""
    if not args and list(kwargs) == [ENVELOPE_ARGUMENT]:
        return kwargs[ENVELOPE_ARGUMENT]
    return {"args": list(args), "kwargs": kwargs}


#: Free-text headers are logged: a few hundred characters say all the bus ever puts there.
_Text = Annotated[StrictStr, Field(max_length=500)]


def _text_without_surrogates(value: str) -> str:
    value.encode("utf-8")  # a lone surrogate raises: no database or log takes it
    return value


class _TaskHeaders(BaseModel):
    """The protocol-2 headers Celery's worker reads, as the bus sends them.

    Nothing else passes but the broker's own headers: RabbitMQ's ``x-`` headers
    (``x-death``, ``x-delivery-count``) and kombu-Redis's ``redelivered`` on a
    message it gave back (its worker died). Celery copies every header onto the request, and
    one named ``chain`` or ``callbacks`` would make the worker send tasks a
    stranger chose.
    """

    model_config = ConfigDict(extra="forbid")

    task: Annotated[StrictStr, Field(min_length=1, max_length=200), AfterValidator(_text_without_surrogates)]
    id: Annotated[StrictStr, AfterValidator(_uuid_text)]
    retries: StrictInt = Field(default=0, ge=0, le=1_000)
    #: The bus sets no per-message time limit: the worker's own limits apply.
    timelimit: tuple[None, None] | None = None
    eta: Annotated[StrictStr, AfterValidator(_eta_text)] | None = None
    expires: None = None
    lang: _Text | None = None
    root_id: _Text | None = None
    parent_id: _Text | None = None
    group: None = None
    group_index: None = None
    shadow: None = None
    origin: _Text | None = None
    argsrepr: _Text | None = None
    kwargsrepr: _Text | None = None
    ignore_result: StrictBool = False
    replaced_task_nesting: StrictInt = Field(default=0, ge=0, le=0)
    stamped_headers: None = None
    stamps: None = None
    redelivered: StrictBool = False


def problem_with(message, policy: IntakePolicy) -> str | None:
    """Why a delivery (a kombu ``Message``) is not a task message ``policy``'s worker accepts, or None.

    Only the shape is judged here; the envelope inside is validated against
    its contract when the task runs (``messaging.delivery``).
    """
    try:
        return _problem_with(message, policy)
    except Exception as exc:  # whatever arrives, the answer is an answer
        return f"unreadable delivery: {type(exc).__name__}: {exc}"


def _problem_with(message, policy: IntakePolicy) -> str | None:
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return "not a Celery protocol-2 task message (no task header)"
    try:
        _TaskHeaders.model_validate({name: value for name, value in headers.items()
                                     if not (isinstance(name, str) and name.startswith("x-"))},
                                    context={"policy": policy})
    except ValidationError as exc:
        return f"task headers the bus does not send: {_first_errors(exc)}"
    if headers["task"] not in policy.handled_types:
        # Celery's own tasks (celery.map, celery.chord ...) run or send whatever they are given.
        return f"no task named {headers['task']!r} in this worker (context {policy.context!r})"
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
    if args or list(kwargs) != [ENVELOPE_ARGUMENT] or not isinstance(kwargs[ENVELOPE_ARGUMENT], dict):
        return f"task message arguments are not one {ENVELOPE_ARGUMENT!r} object"
    return None


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    # Short and without the values: a header may hold anything, personal data included.
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'headers'}: {e['msg']}" for e in exc.errors()[:limit])[:500]


def kwargs_repr(message_type: str, message_id) -> str:
    """The task's arguments as logs and Flower show them: the type and the id, never the payload."""
    return f"{{'{ENVELOPE_ARGUMENT}': <{message_type} id={message_id}>}}"


def delivery_id(message_id: uuid.UUID | str, context: str) -> str:
    """The task id of one message's delivery to one context: the same for every
    retry of that delivery, different for each subscriber of an event.

    Celery keys a task's state on its id (Flower's task list, the task-result
    row), and every subscriber of an event receives the same message id: with
    it as the task id the second subscriber's run overwrote the first's. The
    worker gives each delivery this id as it takes it (``messaging.worker``);
    the message id stays in the task's arguments (``kwargsrepr``) and envelope.
    """
    return str(uuid.uuid5(uuid.UUID(str(message_id)), context))


def envelope_in(body: Any) -> Any:
    """The envelope inside a decoded task-message body, or the body itself if it holds none."""
    if isinstance(body, list) and len(body) == 3 and isinstance(body[1], dict) and ENVELOPE_ARGUMENT in body[1]:
        return body[1][ENVELOPE_ARGUMENT]
    return body


def message_id_in(headers: Any) -> Any:
    """The message id a delivery's headers name (the ``id`` header), as found: None if none."""
    return headers.get("id") if isinstance(headers, dict) else None


def message_type_in(headers: Any) -> Any:
    """The message type a delivery's headers name (the ``task`` header), as found: None if none."""
    return headers.get("task") if isinstance(headers, dict) else None


def as_delivery(message, context: str) -> str:
    """Give an accepted delivery the task id of its delivery to ``context`` (``delivery_id``),
    for Celery to key the task on; returns the message's own id, for ``restore_message_id``."""
    message_id = message.headers["id"]
    message.headers["id"] = delivery_id(message_id, context)
    return message_id


def restore_message_id(message, message_id: str) -> None:
    """Put back the message's own id that ``as_delivery`` replaced."""
    message.headers["id"] = message_id


def headers_of_request(task_name: str, request) -> dict[str, Any]:
    """What a running task's message said (Celery's ``task.request``), as a dead letter records it."""
    return {"task": task_name, "id": request.id, "retries": request.retries,
            "delivery_info": dict(request.delivery_info or {})}
