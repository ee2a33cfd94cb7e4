"""One checkout is one trace across the web, the relay and the four workers, received over OTLP.

The platform's real processes run on RabbitMQ and PostgreSQL with the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a receiver of the test's; the
checkout starts from the admin, over HTTP, as an operator starts one.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from opentelemetry.trace import SpanKind

from apps.basket.models import Basket
from apps.basket.services import basket_add_item
from apps.catalog.services import product_create
from apps.ordering.models import Order
from messaging.models import OutboxMessage
from tests.integration.conftest import ROOT, _platform_env
from tests.integration.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.integration.platform_bus import PlatformBus
from tests.integration.redis import _free_port
from tests.polling import wait_for

pytestmark = pytest.mark.integration

#: The OTLP protobuf's span kinds (SpanKind's values are one lower).
SERVER, PRODUCER, CONSUMER = (SpanKind.SERVER.value + 1, SpanKind.PRODUCER.value + 1, SpanKind.CONSUMER.value + 1)
#: Every messaging span says these (OpenTelemetry's messaging semantic conventions).
MESSAGING_ATTRIBUTES = {"messaging.system", "messaging.destination.name", "messaging.operation.type",
                        "messaging.operation.name", "messaging.message.id", "messaging.message.conversation_id"}
TRACED = {
    "OTEL_BSP_SCHEDULE_DELAY": "200",  # milliseconds: spans reach the receiver soon after they end
}


@pytest.fixture
def receiver():
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture
def traced_platform(platforms, receiver, transactional_db, tmp_path):
    """The relay and a worker per context, and the web under gunicorn, all exporting to ``receiver``."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **TRACED}
    processes = platforms.on(settings.CELERY_BROKER_URL, **env)
    port = _free_port()
    log = open(tmp_path / "web.log", "w")
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--pythonpath", "platform", "config.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT, env=_platform_env(CELERY_BROKER_URL=settings.CELERY_BROKER_URL, **env), stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=30, message=f"the web at {url} ({tmp_path / 'web.log'})")
        yield processes, url
        PlatformBus(processes).run_until_quiet()
    finally:
        web.terminate()
        web.wait(timeout=30)
        log.close()
        # The next test's processes export nowhere.
        platforms.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/admin/login/", timeout=10).status_code == 200
    except requests.RequestException:  # not listening yet, or still loading
        return False


def _check_out_in_the_admin(url: str, basket: Basket) -> None:
    """Log in and run the basket admin's "Check out selected baskets" action, as an operator does."""
    get_user_model().objects.create_superuser("tracer", "tracer@example.com", "a-test-password")
    session = requests.Session()
    session.get(f"{url}/admin/login/", timeout=10)
    login = session.post(f"{url}/admin/login/?next=/admin/", timeout=10, data={
        "username": "tracer", "password": "a-test-password", "csrfmiddlewaretoken": session.cookies["csrftoken"],
        "next": "/admin/",
    })
    assert login.url.endswith("/admin/"), "the login was refused"
    answer = session.post(f"{url}/admin/basket/basket/", timeout=30, data={
        "action": "check_out", "_selected_action": str(basket.pk), "index": "0",
        "csrfmiddlewaretoken": session.cookies["csrftoken"],
    })
    assert answer.status_code == 200 and "checkout started" in answer.text, answer.text[-2000:]


def _trace_id_of(envelope: dict) -> str:
    return envelope["traceparent"].split("-")[1]


def _span_id_of(envelope: dict) -> str:
    return envelope["traceparent"].split("-")[2]


def test_one_checkout_is_one_trace_across_web_relay_and_four_workers(traced_platform, receiver):
    processes, url = traced_platform
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))

    # When the operator checks the basket out in the admin
    _check_out_in_the_admin(url, Basket.objects.get(customer_id="c1"))
    order_id = Basket.objects.get(customer_id="c1").pending_order_id or Order.objects.get().id
    wait_for(lambda: Order.objects.filter(id=order_id, status=Order.Status.PAID).exists(), timeout=60,
             message="the order to be paid")
    PlatformBus(processes).run_until_quiet()

    # Then every message of the conversation names one trace in its envelope
    rows = list(OutboxMessage.objects.filter(correlation_id=order_id))
    published = [row for row in rows if row.published_at is not None]
    assert len(published) >= 6, [row.message_type for row in rows]
    trace_ids = {_trace_id_of(row.envelope) for row in rows}
    assert len(trace_ids) == 1, trace_ids
    (trace_id,) = trace_ids

    # And the receiver gets a process span from each of the four workers for each of their messages
    def trace_received() -> list[ReceivedSpan] | None:
        spans = [span for span in receiver.received() if span.trace_id == trace_id]
        process_spans = [s for s in spans if s.attributes.get("messaging.operation.type") == "process"]
        sends = [s for s in spans if s.attributes.get("messaging.operation.type") == "send"]
        expected = sum(len(_consumers_of(row)) for row in published)
        return spans if len(process_spans) >= expected and len(sends) >= len(published) else None

    spans = wait_for(trace_received, timeout=30, message="every span of the checkout at the receiver")
    by_id = {span.span_id: span for span in spans}
    services = {span.service for span in spans}
    assert {"web", "relay", "basket-worker", "ordering-worker", "catalog-worker", "payment-worker"} <= services

    # The web request is the root: the checkout's first message is created under it
    (request,) = [span for span in spans if span.kind == SERVER]
    assert request.service == "web" and request.parent_span_id == ""
    place_order = next(row for row in rows if row.message_type == "ordering.PlaceOrder")
    created = by_id[_span_id_of(place_order.envelope)]
    assert (created.service, created.kind, created.parent_span_id) == ("web", PRODUCER, request.span_id)

    for row in published:
        create = by_id[_span_id_of(row.envelope)]
        assert create.attributes["messaging.operation.type"] == "create"
        assert create.attributes["messaging.message.id"] == str(row.message_id)
        # The relay's send: a child of the span that wrote the row, linked to it too
        (send,) = [s for s in spans if s.attributes.get("messaging.operation.type") == "send"
                   and s.attributes["messaging.message.id"] == str(row.message_id)]
        assert (send.service, send.kind, send.parent_span_id) == ("relay", PRODUCER, create.span_id)
        assert (trace_id, create.span_id) in send.links
        # Each subscriber's delivery: a child of (and linked to) the create span, its handler within it
        deliveries = [s for s in spans if s.attributes.get("messaging.operation.type") == "process"
                      and s.attributes["messaging.message.id"] == str(row.message_id)]
        assert sorted(s.attributes["messaging.consumer.group.name"] for s in deliveries) == _consumers_of(row)
        for delivery in deliveries:
            assert delivery.service == f"{delivery.attributes['messaging.consumer.group.name']}-worker"
            assert (delivery.kind, delivery.parent_span_id) == (CONSUMER, create.span_id)
            assert (trace_id, create.span_id) in delivery.links
            assert delivery.attributes["bus.delivery.outcome"] == "handled"
            handlers = [s for s in spans if s.parent_span_id == delivery.span_id and s.name.startswith("handle ")]
            assert handlers, f"no handler span under {delivery.name}"
        for span in (create, send, *deliveries):
            assert MESSAGING_ATTRIBUTES <= set(span.attributes), (span.name, span.attributes)
            assert span.attributes["messaging.system"] == "rabbitmq"
            assert span.attributes["messaging.message.conversation_id"] == str(order_id)

    # A message a handler wrote is created under that handler's span: the conversation goes on
    for row in published:
        if row.causation_id is not None:
            create = by_id[_span_id_of(row.envelope)]
            handler = by_id[create.parent_span_id]
            assert handler.name.startswith(f"handle {row.source}:")
            cause = by_id[handler.parent_span_id]
            assert cause.attributes["messaging.message.id"] == str(row.causation_id)


def _consumers_of(row: OutboxMessage) -> list[str]:
    """The contexts that handle ``row``'s message, sorted."""
    from messaging.registry import registry

    return sorted({handler.context for handler in registry.handlers_for(row.message_type)})


def test_with_no_otel_variables_no_envelope_carries_trace_context(bus):
    from apps.basket.services import basket_checkout

    product_create(sku="MUG-2", name="Mug", price=Decimal("10.00"), stock=5)
    basket_add_item(customer_id="c2", sku="MUG-2", quantity=1, unit_price=Decimal("10.00"))
    order_id = basket_checkout(customer_id="c2")
    PlatformBus(bus).run_until_quiet()

    # The workers wrote most of the conversation's messages: none names a trace
    rows = OutboxMessage.objects.filter(correlation_id=order_id)
    assert rows.filter(causation_id__isnull=False).count() >= 4
    assert not [row.envelope for row in rows if {"traceparent", "tracestate"} & set(row.envelope)]
