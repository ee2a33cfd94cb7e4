"""Log lines as ``BUS_LOG_FORMAT=json`` writes them: one JSON object per line naming the
message being handled (``messaging.log_context``); the text format stays what it was.
Every process writing them, on RabbitMQ and PostgreSQL: ``tests/integration/test_json_logs.py``."""

import json
import logging
import uuid

import pytest
from celery import current_app
from celery._state import _task_stack
from django.conf import settings
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from messaging import log_context

ENVELOPE = {"id": str(uuid.uuid4()), "type": "ordering.PlaceOrder", "correlationid": str(uuid.uuid4()),
            "data": {"customer": "personal data"}}


@pytest.fixture
def json_lines():
    """The lines a logger writes through the platform's JSON handler, each parsed."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(log_context.JsonFormatter())
    handler.addFilter(log_context.LogContextFilter())
    logger = logging.getLogger("tests.log_format")
    logger.addHandler(handler)
    try:
        yield logger, lambda: [json.loads(line) for line in lines], lines
    finally:
        logger.removeHandler(handler)


def test_a_line_outside_any_delivery_names_its_time_level_logger_and_process_role(json_lines):
    logger, parsed, _ = json_lines

    logger.warning("relay: %s", "retrying")

    [line] = parsed()
    assert (line["level"], line["logger"], line["message"], line["process_role"]) == (
        "WARNING", "tests.log_format", "relay: retrying", "command")
    assert line["time"].endswith("+00:00") and "T" in line["time"]  # ISO 8601, in UTC
    assert not {"message_id", "delivery_id", "context", "trace_id"} & set(line)


def test_a_line_logged_while_a_delivery_is_handled_names_its_message_and_delivery(json_lines, settings):
    settings.BUS_CONTEXT = "ordering"
    logger, parsed, _ = json_lines

    with log_context.delivery(ENVELOPE, delivery_id="delivery-1"):
        logger.info("handled")
    logger.info("after")

    inside, after = parsed()
    assert {key: inside.get(key) for key in ("context", *log_context.MESSAGE_FIELDS)} == {
        "context": "ordering", "message_id": ENVELOPE["id"], "message_type": "ordering.PlaceOrder",
        "correlation_id": ENVELOPE["correlationid"], "delivery_id": "delivery-1"}
    assert "message_id" not in after and after["context"] == "ordering"


def test_the_lines_celery_writes_for_the_task_it_runs_name_that_delivery(json_lines):
    # A delivery handled alone runs in Celery's tracer, which logs "succeeded" after the task's body.
    logger, parsed, _ = json_lines
    task = current_app.tasks["ordering.PlaceOrder"]
    task.push_request(id="delivery-2", args=(), kwargs={"envelope": ENVELOPE})
    _task_stack.push(task)
    try:
        logger.info("Task ordering.PlaceOrder[delivery-2] succeeded in 0.01s")
    finally:
        _task_stack.pop()
        task.pop_request()

    [line] = parsed()
    assert (line["delivery_id"], line["message_id"], line["message_type"], line["correlation_id"]) == (
        "delivery-2", ENVELOPE["id"], "ordering.PlaceOrder", ENVELOPE["correlationid"])


def test_a_line_written_under_a_span_names_its_trace(json_lines):
    logger, parsed, _ = json_lines
    span = NonRecordingSpan(SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331,
                                        is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)))

    with trace.use_span(span):
        logger.info("publishing")

    assert parsed()[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_an_exception_is_one_field_of_one_line(json_lines):
    logger, parsed, raw = json_lines

    try:
        raise LookupError("no order 42")
    except LookupError:
        logger.warning("handler ordering:PlaceOrder failed on attempt 1", exc_info=True)

    assert "\n" not in raw[0]
    stack = parsed()[0]["exc_info"]
    assert stack.startswith("Traceback (most recent call last):") and "LookupError: no order 42" in stack


def test_the_arguments_celery_attaches_to_its_lines_are_never_logged(json_lines):
    logger, parsed, raw = json_lines

    logger.info("Task received", extra={"data": {"args": [ENVELOPE]}})

    assert "data" not in parsed()[0] and "personal data" not in raw[0]


def test_text_stays_the_default_format_and_reads_as_before():
    assert settings.BUS_LOG_FORMAT == "text"
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "text"
    assert settings.LOGGING["formatters"]["text"]["format"] == "%(asctime)s %(levelname)s %(name)s: %(message)s"
