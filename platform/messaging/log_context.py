"""Log lines that carry the conversation: each says which message it was written for.

While a delivery is handled, every line any code logs (a handler's, the bus's,
Celery's own "succeeded" line) names that message: its ``message_id``,
``message_type``, ``correlation_id`` (the business conversation: a checkout's
lines share its order id) and ``delivery_id`` (the Celery task id of the
delivery), and the ``trace_id`` of the current OpenTelemetry span; every line
names its ``process_role`` and, in a worker, its ``context``.
``LogContextFilter`` puts these on each record, for any formatter;
``JsonFormatter`` writes a record as one JSON object per line
(``BUS_LOG_FORMAT=json``; the text format shows none of them).

The message comes from ``delivery(...)``, bound around each delivery a batch
runs (``messaging.batch_run``) and around what the relay logs of a row, or else
from the task Celery's tracer is running (a delivery handled alone,
``messaging.tasks``): its own lines are written outside the task's body.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import logging.config
from collections.abc import Iterator, Mapping
from typing import Any

from celery import current_task
from django.conf import settings
from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _PythonJsonFormatter

from messaging.task_message import envelope_from_arguments

#: The fields of the message being handled, in the order a JSON line lists them.
MESSAGE_FIELDS = ("message_id", "message_type", "correlation_id", "delivery_id")

_delivery: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "messaging_log_delivery", default=None
)
#: What this process is (``set_process_role``): web, relay, worker, flower; a management command otherwise.
_process_role = "command"


def configure(config: dict) -> None:
    """Django's logging set-up (``LOGGING_CONFIG``): ``LOGGING``, and, in JSON, Python's warnings
    as log lines (``py.warnings``) instead of raw text printed among them."""
    logging.config.dictConfig(config)
    if settings.BUS_LOG_FORMAT == "json":
        logging.captureWarnings(True)


def set_process_role(role: str) -> None:
    """Name what this process is, for every line it logs from now on (its forked children inherit it)."""
    global _process_role
    _process_role = role


def message_fields(envelope: Any) -> dict[str, str]:
    """The log fields of an envelope (``messaging.contracts.Envelope``, or a body as it came, maybe not one)."""
    if isinstance(envelope, Mapping):
        values = (envelope.get("id"), envelope.get("type"), envelope.get("correlationid"))
    else:
        values = (getattr(envelope, "id", None), getattr(envelope, "type", None),
                  getattr(envelope, "correlationid", None))
    return {name: str(value) for name, value in zip(MESSAGE_FIELDS, values) if value is not None}


@contextlib.contextmanager
def delivery(envelope: Any = None, *, delivery_id: str | None = None) -> Iterator[None]:
    """Every line logged inside names ``envelope`` (and ``delivery_id``, the delivery's task id)."""
    fields = message_fields(envelope)
    if delivery_id is not None:
        fields["delivery_id"] = str(delivery_id)
    token = _delivery.set(fields)
    try:
        yield
    finally:
        _delivery.reset(token)


def _fields_of_the_traced_task() -> Mapping[str, str] | None:
    """The message of the task Celery's tracer runs in this process (a delivery handled alone):
    its task id is the delivery's, its name the message type, its argument the envelope."""
    task = current_task._get_current_object()
    request = getattr(task, "request", None)
    if request is None or not request.id:
        return None
    envelope = envelope_from_arguments(request.args or (), request.kwargs or {})
    return {"message_type": task.name, **message_fields(envelope), "delivery_id": request.id}


class LogContextFilter(logging.Filter):
    """Adds ``process_role``, ``context``, the message being handled (``MESSAGE_FIELDS``) and
    ``trace_id`` to each record it passes; a field with no value is left off. Drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_role = _process_role
        if settings.BUS_CONTEXT:
            record.context = settings.BUS_CONTEXT
        fields = _delivery.get() or _fields_of_the_traced_task()
        for name, value in (fields or {}).items():
            # A caller's own ``extra`` says it better.
            record.__dict__.setdefault(name, value)
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = trace.format_trace_id(span_context.trace_id)
        return True


class JsonFormatter(_PythonJsonFormatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``pid``, then the record's extra fields (``LogContextFilter``'s among them), and a
    traceback as one string, ``exc_info``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("fmt", ["asctime", "levelname", "name", "message", "process"])
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger",
                                            "process": "pid"})
        # Celery adds a task's arguments to its lines as ``data``: the payload, which may
        # hold personal data, is never logged.
        kwargs.setdefault("reserved_attrs", [*RESERVED_ATTRS, "data", "taskName"])
        super().__init__(*args, **kwargs)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(timespec="milliseconds")
