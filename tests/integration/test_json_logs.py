"""``BUS_LOG_FORMAT=json`` on RabbitMQ and PostgreSQL: every line every process writes is
one JSON object, and a checkout's lines are found by its order id, its correlation id,
in the log of each context it went through. (The fields: ``tests/unit/test_log_format.py``.)"""

import json
import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import transaction

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.messages import StockReserved
from apps.catalog.services import product_create
from apps.ordering.models import Order
from tests.integration.platform_bus import PlatformBus
from tests.polling import wait_for
from tests.senders import publish

pytestmark = pytest.mark.integration

#: What every line has, whichever process wrote it.
EVERY_LINE = {"time", "level", "logger", "message", "process_role"}


@pytest.fixture
def json_bus(platforms, transactional_db):
    """The platform's processes, writing JSON; each test's data committed for them to see."""
    processes = platforms.on(settings.CELERY_BROKER_URL, BUS_LOG_FORMAT="json")
    yield processes
    PlatformBus(processes).run_until_quiet()


def _lines(process) -> list[dict]:
    """Each line of the process's log as JSON; a line that is not fails the test, quoted."""
    lines = []
    for number, text in enumerate(process.log_path.read_text().splitlines(), start=1):
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            pytest.fail(f"line {number} of {process.log_path.name} is not JSON: {text[:300]!r}")
    return lines


def test_a_checkouts_lines_are_json_and_found_by_its_order_id_in_every_context_it_went_through(json_bus):
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))
    order_id = basket_checkout(customer_id="c1")

    PlatformBus(json_bus).run_until_quiet()

    assert Order.objects.get(id=order_id).status == Order.Status.PAID
    by_process = {name: _lines(process) for name, process in json_bus.items()}
    for name, lines in by_process.items():
        role = "relay" if name == "relay" else "worker"
        assert lines and all(EVERY_LINE <= set(line) and line["process_role"] == role for line in lines), name
        if role == "worker":
            assert {line["context"] for line in lines} == {name.removeprefix("worker-")}
    conversation = [line for lines in by_process.values() for line in lines
                    if line.get("correlation_id") == str(order_id)]
    deliveries = [line for line in conversation if line["process_role"] == "worker"]
    assert {line["context"] for line in deliveries} >= {"basket", "catalog", "ordering", "payment"}
    assert all(line["message_type"] and line["delivery_id"] and line["message_id"] for line in deliveries)
    # The relay's lines of a message (an event no context subscribes to) name it, but no delivery.
    assert all(line["message_type"] and line["message_id"] for line in conversation)
    # Each delivery's own "succeeded" line, whichever way it was handled (in a batch, here).
    succeeded = {line["message_type"] for line in deliveries if " succeeded in " in line["message"]}
    assert {"ordering.PlaceOrder", "catalog.ReserveStock", "payment.ProcessPayment"} <= succeeded


def test_a_handlers_failure_is_one_line_with_its_traceback_as_a_field(json_bus):
    with transaction.atomic():
        # Ordering has no such order: its handler raises, and the message is retried.
        envelope = publish(StockReserved(order_id=uuid.uuid4()))

    def failure_line():
        return next((line for line in _lines(json_bus["worker-ordering"])
                     if line.get("message_id") == str(envelope.id) and "exc_info" in line), None)

    line = wait_for(failure_line, message="the ordering worker to log its handler's failure")

    assert line["level"] == "WARNING" and "failed on attempt" in line["message"]
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert (line["message_type"], line["correlation_id"]) == ("catalog.StockReserved", str(envelope.correlationid))
    assert line["delivery_id"]
