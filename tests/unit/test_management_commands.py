"""publish_event, send_command and bus_topology, as users and scripts call them."""

import json
import subprocess
import sys
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from messaging.models import OutboxMessage

ROOT = Path(__file__).resolve().parents[2]


def _call(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


@pytest.mark.django_db
def test_publish_event_writes_the_outbox_and_prints_the_message_id():
    correlation = uuid.uuid4()
    printed = _call("publish_event", "catalog.ProductPriceChanged",
                    "--data", '{"sku": "MUG-1", "old_price": "1.00", "new_price": "2.00", "price_version": 1}',
                    "--correlation-id", str(correlation))

    row = OutboxMessage.objects.get(message_id=uuid.UUID(printed))
    assert row.correlation_id == correlation
    assert row.envelope["source"] == "catalog"


@pytest.mark.django_db
def test_send_command_writes_the_outbox():
    printed = _call("send_command", "catalog.ReleaseStock", "--data", json.dumps({"order_id": str(uuid.uuid4())}))

    row = OutboxMessage.objects.get(message_id=uuid.UUID(printed))
    assert (row.kind, row.envelope["source"]) == ("command", "operator")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["publish_event", "catalog.ProductPriceChanged", "--data", '{"sku": "A"}'], "Invalid data for catalog.ProductPriceChanged"),
        (["publish_event", "catalog.Nope", "--data", "{}"], "Unknown event type 'catalog.Nope'"),
        (["publish_event", "catalog.ProductPriceChanged", "--data", "{not json"], "--data is not valid JSON"),
        (["send_command", "catalog.ProductPriceChanged", "--data", "{}"], "Unknown command type"),
        (["send_command", "catalog.ReleaseStock", "--data", "[1]"], "--data must be a JSON object"),
    ],
)
def test_bad_type_or_data_is_a_clear_error_and_writes_nothing(args, error):
    with pytest.raises(CommandError, match=error.replace("(", r"\(")):
        call_command(*args)
    assert not OutboxMessage.objects.exists()


def test_publish_event_with_invalid_data_exits_non_zero_from_the_shell(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "publish_event", "catalog.ProductPriceChanged", "--data", '{"sku": ""}'],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "BUS_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "Invalid data for catalog.ProductPriceChanged" in result.stderr
    assert "new_price" in result.stderr


def test_bus_topology_json_shows_the_price_fanout_with_its_subscriber_queues():
    topology = json.loads(_call("bus_topology", "--format", "json"))

    exchanges = {e["name"]: e["type"] for e in topology["exchanges"]}
    assert exchanges["events.catalog.ProductPriceChanged"] == "fanout"
    bound = [q["name"] for q in topology["queues"]
             if any(b["exchange"] == "events.catalog.ProductPriceChanged" for b in q["bindings"])]
    assert sorted(bound) == ["basket.events.catalog.ProductPriceChanged", "ordering.events.catalog.ProductPriceChanged"]
    assert topology["contexts"]["catalog"]["commands"] == ["catalog.ReleaseStock", "catalog.ReserveStock"]


def test_bus_topology_text_lists_exchanges_queues_and_handlers():
    text = _call("bus_topology")

    assert "events.catalog.ProductPriceChanged  (fanout)" in text
    assert "<- commands  key=ordering.PlaceOrder" in text
    assert "apps.payment.handlers.process_payment" in text
