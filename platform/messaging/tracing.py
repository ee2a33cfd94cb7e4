"""OpenTelemetry traces of the bus: one trace per conversation, across every process it crosses.

Each hop of a message is a span, named and described by OpenTelemetry's messaging
semantic conventions: the service call that writes the outbox row (``create``), the
relay's publish (``send``), each context's delivery (``process``) and, inside it, each
handler; the messages a handler writes are ``create`` spans under it, so the
conversation goes on in the same trace. The trace context travels in the envelope as
the CloudEvents distributed-tracing extension (``traceparent``, ``tracestate``), stored
with the outbox row: a consumer in another language continues the trace from it, and
the relay's span, a child of the span that wrote the row, links to it as well.

Tracing is on only when the standard ``OTEL_*`` variables ask for an exporter
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_TRACES_EXPORTER``), and ``OTEL_SDK_DISABLED`` is not true. Off, nothing is
exported and every function here returns at once: no span, no envelope attribute.
On, spans go out over OTLP/HTTP in batches (``OTEL_BSP_*``), from a thread each
process (and each prefork pool process, after its fork) has of its own.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from messaging import brokers
from messaging.topology import consumer_queue_name

logger = logging.getLogger(__name__)

#: The envelope attributes that carry the trace context (CloudEvents distributed tracing).
TRACE_ATTRIBUTES = ("traceparent", "tracestate")
#: Variables that ask for spans to be exported, one of which must be set for tracing to be on.
EXPORTER_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")

#: Seconds a stopping process gives its last spans to reach the collector.
FLUSH_TIMEOUT = 2.0

_propagator = TraceContextTextMapPropagator()
#: The tracer once ``configure`` turned tracing on; None while it is off.
_tracer: trace.Tracer | None = None


def requested() -> bool:
    """Whether the environment asks for traces (see the module's docstring)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(os.environ.get(name) for name in EXPORTER_VARIABLES)


def configure(service_name: str) -> bool:
    """Turn tracing on for this process, as ``service_name``, if the environment asks for it.

    Called once by each process's entry point (a context's worker, the relay, the
    web); True if tracing is on. ``service_name`` names the process's role whatever
    ``OTEL_SERVICE_NAME`` says, since one environment usually serves every process
    of the platform; other resource attributes come from ``OTEL_RESOURCE_ATTRIBUTES``.
    """
    global _tracer
    if _tracer is not None or not requested():
        return _tracer is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter != "otlp":
        logger.warning("OTEL_TRACES_EXPORTER=%s: the platform exports traces over OTLP/HTTP only", exporter)
    # Not the SDK's own shutdown at exit, which waits as long as the exporter retries: ours is bounded.
    provider = TracerProvider(resource=Resource.create({"service.name": service_name, "service.namespace": "bus"}),
                              shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    atexit.register(flush)
    _tracer = trace.get_tracer("messaging")
    return True


def enabled() -> bool:
    return _tracer is not None


def flush(timeout: float = FLUSH_TIMEOUT) -> None:
    """Export what is buffered, for up to ``timeout`` seconds: a prefork pool process leaves by
    ``os._exit``, without exit hooks. Bounded, since the SDK's own flush waits as long as the
    exporter retries (measured: 14 s with the collector away), and a process stopping must stop
    within its grace period."""
    if _tracer is None:
        return
    exporting = threading.Thread(target=trace.get_tracer_provider().force_flush, daemon=True)
    exporting.start()
    exporting.join(timeout)


def instrument_django() -> None:
    """Spans of the web's requests, by Django's OpenTelemetry instrumentation (before its middleware loads)."""
    if _tracer is None:
        return
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    # Prometheus scrapes every few seconds: no trace of each scrape, unless told otherwise.
    os.environ.setdefault("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "metrics")
    DjangoInstrumentor().instrument()


def _common(system: str, destination: str, operation_type: str, operation_name: str, envelope: dict) -> dict:
    attributes = {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation.type": operation_type,
        "messaging.operation.name": operation_name,
        "messaging.message.id": str(envelope["id"]),
        "cloudevents.event_id": str(envelope["id"]),
        "cloudevents.event_type": envelope["type"],
        "cloudevents.event_source": envelope["source"],
    }
    if envelope.get("correlationid"):
        attributes["messaging.message.conversation_id"] = str(envelope["correlationid"])
    return attributes


def created(envelope: dict, *, destination: str) -> dict[str, str]:
    """A ``create`` span for a message written to the outbox now; the trace attributes for its envelope.

    A child of whatever is current (a web request, the handler of the message that
    caused this one). Returns ``{}`` while tracing is off.
    """
    if _tracer is None:
        return {}
    span = _tracer.start_span(f"create {destination}", kind=SpanKind.PRODUCER,
                              attributes=_common(brokers.current().messaging_system, destination, "create",
                                                 "create", envelope))
    span.end()
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def _parent(trace_attributes: dict) -> tuple:
    """The context a message's ``traceparent``/``tracestate`` name, and a link to its span (or no link)."""
    context = _propagator.extract({name: trace_attributes[name] for name in TRACE_ATTRIBUTES
                                   if isinstance(trace_attributes.get(name), str)})
    written = trace.get_current_span(context).get_span_context()
    return context, ([Link(written)] if written.is_valid else [])


class Sends:
    """The relay's ``send`` spans of one batch: one per row, each a child of, and linked to,
    the span that wrote the row; started when the batch went out, ended at its confirms."""

    def __init__(self, system: str) -> None:
        self._system = system
        self._started = time.time_ns()

    def record(self, envelope: dict, *, destination: str, routing_key: str, error: str | None) -> None:
        context, links = _parent(envelope)
        attributes = _common(self._system, destination, "send", "publish", envelope)
        if routing_key:
            attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
        span = _tracer.start_span(f"publish {destination}", context=context, kind=SpanKind.PRODUCER,
                                  links=links, attributes=attributes, start_time=self._started)
        if error:
            span.set_attribute("error.type", error.split(":", 1)[0])
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


def sends(system: str) -> Sends | None:
    """A batch's ``send`` spans, or None while tracing is off."""
    return None if _tracer is None else Sends(system)


class Delivery:
    """A delivery's ``process`` span: what became of it is said by one of its methods."""

    def __init__(self, span) -> None:
        self.span = span
        #: Whether one of the methods below said what became of the delivery.
        self.said = False

    def handled(self, outcome: dict) -> None:
        self.said = True
        self.span.set_attribute("bus.delivery.outcome", "duplicate" if not outcome.get("handled") else "handled")

    def retried(self, error: BaseException) -> None:
        self._failed("retried", type(error).__name__, f"{type(error).__name__}: {error}")

    def held_back(self, reason: str) -> None:
        self.said = True
        self.span.set_attribute("bus.delivery.outcome", "held_back")
        self.span.add_event("held back", {"bus.reason": reason})

    def rolled_back(self, error: BaseException) -> None:
        """Failed inside a batch, undone to its savepoint: it runs again alone, under a span of its own."""
        self._failed("rolled_back", type(error).__name__, f"{type(error).__name__}: {error}")

    def dead_lettered(self, reason: str, error: str) -> None:
        self.span.set_attribute("bus.dead_letter.reason", reason)
        self._failed("dead_lettered", reason, error)

    def _failed(self, outcome: str, error_type: str, description: str) -> None:
        self.said = True
        self.span.set_attribute("bus.delivery.outcome", outcome)
        self.span.set_attribute("error.type", error_type)
        # Its first line only: what follows may quote the message's data (pydantic's errors
        # do), which has no place in a tracing backend.
        self.span.set_status(Status(StatusCode.ERROR, description.strip().splitlines()[0][:300] if description else ""))


class _NoDelivery(Delivery):
    def __init__(self) -> None:
        super().__init__(trace.INVALID_SPAN)


_NO_DELIVERY = _NoDelivery()


@contextlib.contextmanager
def processing(envelope: Any, *, context: str, delivery_id: str) -> Iterator[Delivery]:
    """The ``process`` span of one delivery to ``context``: a child of the span that wrote the
    message (so the conversation is one trace), linked to it, current while the handlers run.

    A body that is no envelope at all (it becomes a dead letter) still gets its span, as
    far as it can be described."""
    if _tracer is None:
        yield _NO_DELIVERY
        return
    envelope = {"id": "", "type": "", "kind": "", "source": "", **(envelope if isinstance(envelope, dict) else {})}
    queue = consumer_queue_name(context, envelope["kind"], envelope["type"]) if envelope["type"] else context
    context_of_writer, links = _parent(envelope)
    attributes = _common(brokers.current().messaging_system, queue, "process", "process", envelope)
    attributes["messaging.consumer.group.name"] = context
    attributes["messaging.message.delivery_id"] = delivery_id
    # The outcome is the delivery's to say (a hold-back ends in Celery's Retry, no error); an
    # exception it did not explain (the database gone, say) marks the span failed below.
    with _tracer.start_as_current_span(f"process {queue}", context=context_of_writer, kind=SpanKind.CONSUMER,
                                       links=links, attributes=attributes, record_exception=False,
                                       set_status_on_exception=False) as span:
        delivery = Delivery(span)
        try:
            yield delivery
        except BaseException as exc:
            if not delivery.said:
                span.record_exception(exc)
                delivery._failed("failed", type(exc).__name__, f"{type(exc).__name__}: {exc}")
            raise


@contextlib.contextmanager
def handling(handler_name: str, function: str) -> Iterator[None]:
    """A handler's span, inside its delivery's ``process`` span (an exception marks it failed)."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(f"handle {handler_name}", attributes={
        "bus.handler.name": handler_name, "code.function.name": function,
    }):
        yield
