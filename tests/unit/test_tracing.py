"""Traces of the bus (``messaging.tracing``), with spans kept in memory.

What each hop's span says and how the spans hang together, in this process;
across the real processes, over OTLP: tests/integration/test_traces.py.
"""

from decimal import Decimal

import pytest
from celery import current_app
from celery.exceptions import Retry
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from apps.basket.services import basket_add_item
from apps.catalog.messages import ProductPriceChanged
from messaging import batch_run, tracing
from messaging.delivery import DeadLettered
from messaging.models import OutboxMessage
from tests.brokers import on_broker
from tests.senders import publish
from tests.unit.test_batch_run import _item

pytestmark = pytest.mark.django_db


@pytest.fixture
def spans(monkeypatch, settings):
    """Tracing on in this process, its spans kept in memory; the embedded broker."""
    on_broker(settings, "embedded")
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    return exporter


@pytest.fixture
def basket_worker(monkeypatch, settings):
    settings.BUS_CONTEXT = "basket"
    monkeypatch.setattr(batch_run, "close_old_connections", lambda: None)
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))


def _price_change() -> dict:
    publish(ProductPriceChanged(sku="MUG-1", old_price=Decimal("10.00"), new_price=Decimal("12.00"),
                                price_version=1, currency="EUR"))
    return OutboxMessage.objects.get().envelope


def _run_task(envelope: dict, *, retries: int = 0):
    task = current_app.tasks["catalog.ProductPriceChanged"]
    task.push_request(id="delivery-1", retries=retries, delivery_info={})
    try:
        return task.run(envelope=envelope)
    finally:
        task.pop_request()


def _named(exporter, prefix: str) -> list:
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]


@pytest.mark.parametrize(("variables", "expected"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
])
def test_traces_are_on_only_when_the_standard_variables_ask_for_an_exporter(monkeypatch, variables, expected):
    for name in (*tracing.EXPORTER_VARIABLES, "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    assert tracing.requested() is expected


def test_with_tracing_off_an_envelope_names_no_trace(settings):
    on_broker(settings, "embedded")
    assert not tracing.enabled()

    envelope = _price_change()

    assert not {"traceparent", "tracestate"} & set(envelope)


def test_a_message_written_under_a_span_names_its_create_span_as_its_trace_context(spans):
    with tracing._tracer.start_as_current_span("web request") as request:
        envelope = _price_change()

    (create,) = _named(spans, "create ")
    version, trace_id, span_id, flags = envelope["traceparent"].split("-")
    assert (int(trace_id, 16), int(span_id, 16)) == (create.context.trace_id, create.context.span_id)
    assert create.parent.span_id == request.get_span_context().span_id
    assert create.kind is SpanKind.PRODUCER and create.name == "create events.catalog.ProductPriceChanged"
    assert create.attributes["messaging.operation.type"] == "create"
    assert create.attributes["messaging.message.id"] == envelope["id"]
    assert create.attributes["messaging.message.conversation_id"] == envelope["correlationid"]
    assert create.attributes["messaging.system"] == "kombu_filesystem"


def test_a_delivery_is_a_process_span_under_the_messages_create_span_with_its_handler_inside(spans, basket_worker):
    envelope = _price_change()

    _run_task(envelope)

    (create,) = _named(spans, "create ")
    (process,) = _named(spans, "process ")
    (handler,) = _named(spans, "handle ")
    assert process.parent.span_id == create.context.span_id and process.context.trace_id == create.context.trace_id
    assert [link.context.span_id for link in process.links] == [create.context.span_id]
    assert process.kind is SpanKind.CONSUMER
    assert process.name == "process basket.events.catalog.ProductPriceChanged"
    assert process.attributes["messaging.consumer.group.name"] == "basket"
    assert process.attributes["messaging.message.delivery_id"] == "delivery-1"
    assert process.attributes["bus.delivery.outcome"] == "handled"
    assert handler.parent.span_id == process.context.span_id
    assert handler.attributes["bus.handler.name"] == "basket:catalog.ProductPriceChanged"


def test_a_retry_shows_on_the_process_span_as_an_error_with_its_cause(spans, basket_worker, monkeypatch):
    envelope = _price_change()
    monkeypatch.setattr("apps.basket.handlers.basket_reprice", _fail)
    monkeypatch.setattr("messaging.tasks.publish_confirmed", lambda messages: None)

    with pytest.raises(Retry):
        _run_task(envelope)

    (process,) = _named(spans, "process ")
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes["bus.delivery.outcome"] == "retried"
    assert process.attributes["error.type"] == "ConnectionError"
    (handler,) = _named(spans, "handle ")
    assert handler.status.status_code is StatusCode.ERROR


def test_a_dead_letter_shows_on_the_process_span_with_its_reason(spans, basket_worker, monkeypatch, settings):
    envelope = _price_change()
    monkeypatch.setattr("apps.basket.handlers.basket_reprice", _fail)

    with pytest.raises(DeadLettered):
        _run_task(envelope, retries=settings.BUS_MAX_RETRIES)

    (process,) = _named(spans, "process ")
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes["bus.delivery.outcome"] == "dead_lettered"
    assert process.attributes["bus.dead_letter.reason"] == process.attributes["error.type"] == "handler_failed"


def test_each_delivery_of_a_batch_has_its_process_span_and_a_failed_one_says_it_was_rolled_back(
    spans, basket_worker, monkeypatch
):
    basket_add_item(customer_id="c2", sku="BAD", quantity=1, unit_price=Decimal("10.00"))
    good = _price_change()
    OutboxMessage.objects.all().delete()
    publish(ProductPriceChanged(sku="BAD", old_price=Decimal("10.00"), new_price=Decimal("12.00"),
                                price_version=1, currency="EUR"))
    bad = OutboxMessage.objects.get().envelope

    def fail_on_bad(*, sku, **kwargs):
        if sku == "BAD":
            raise ConnectionError("payment gateway down")

    monkeypatch.setattr("apps.basket.handlers.basket_reprice", fail_on_bad)
    batch_run.run_batch([_item(good), _item(bad)])

    process = {span.attributes["messaging.message.id"]: span for span in _named(spans, "process ")}
    assert process[good["id"]].attributes["bus.delivery.outcome"] == "handled"
    assert process[bad["id"]].attributes["bus.delivery.outcome"] == "rolled_back"
    assert process[bad["id"]].status.status_code is StatusCode.ERROR
    creates = {span.attributes["messaging.message.id"]: span for span in _named(spans, "create ")}
    for message_id, span in process.items():
        assert span.parent.span_id == creates[message_id].context.span_id


def _fail(**kwargs):
    raise ConnectionError("database briefly away")


def test_a_stopping_process_waits_for_its_last_spans_no_longer_than_the_flush_timeout(monkeypatch):
    import time as clock

    provider = TracerProvider()

    class NeverAnswering:
        def force_flush(self, timeout_millis=None):
            clock.sleep(30)  # an exporter retrying a collector that is away

    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing.trace, "get_tracer_provider", lambda: NeverAnswering())
    started = clock.monotonic()

    tracing.flush(timeout=0.2)

    assert clock.monotonic() - started < 2


def test_a_message_held_back_for_a_newer_worker_is_no_error_on_its_span(spans, basket_worker, monkeypatch):
    envelope = {**_price_change(), "version": 99}
    monkeypatch.setattr("messaging.tasks.publish_confirmed", lambda messages: None)

    with pytest.raises(Retry):
        _run_task(envelope)

    (process,) = _named(spans, "process ")
    assert process.attributes["bus.delivery.outcome"] == "held_back"
    assert process.status.status_code is StatusCode.UNSET


def test_a_traceparent_no_one_can_read_is_ignored_and_the_delivery_starts_a_trace_of_its_own(spans, basket_worker):
    envelope = {**_price_change(), "traceparent": "not-a-trace-context", "tracestate": "x" * 2000}

    outcome = _run_task(envelope)

    assert outcome["handled"] == ["basket:catalog.ProductPriceChanged"]
    (process,) = _named(spans, "process ")
    assert process.parent is None and not process.links
