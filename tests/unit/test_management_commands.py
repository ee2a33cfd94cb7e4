"""publish_event, send_command and bus_topology, as users and scripts call them."""

import json
import socket
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
        (["send_command", "catalog.ReleaseStock", "--data", "null"], "--data must be a JSON object"),
        (["publish_event", "catalog.ProductPriceChanged", "--data",
          '{"sku": "MUG\\u0000", "old_price": "1.00", "new_price": "2.00", "price_version": 1}'],
         "a NUL character"),
        (["send_command", "catalog.ReleaseStock", "--data", "[" * 5000 + "]" * 5000], "--data is nested too deeply"),
        (["send_command", "catalog.ReleaseStock", "--data", '{"order_id": ' + "1" * 5000 + "}"],
         "--data is not valid JSON: Exceeds the limit"),
        (["publish_event", "catalog.ProductPriceChanged", "--data",
          '{"sku": "MUG", "old_price": NaN, "new_price": Infinity, "price_version": 1}'], "finite number"),
        # Bytes that are not UTF-8 reach Python's argv as lone surrogates.
        (["publish_event", "catalog.ProductPriceChanged", "--data",
          '{"sku": "MUG\udcff", "old_price": "1.00", "new_price": "2.00", "price_version": 1}'], "unicode string"),
    ],
)
def test_bad_type_or_data_is_a_clear_error_and_writes_nothing(args, error):
    with pytest.raises(CommandError, match=error.replace("(", r"\(")):
        call_command(*args)
    assert not OutboxMessage.objects.exists()


def test_publish_event_with_invalid_data_exits_non_zero_from_the_shell(tmp_path):
    result = _manage_in_shell("publish_event", "catalog.ProductPriceChanged", "--data", '{"sku": ""}',
                              env={"BUS_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "Invalid data for catalog.ProductPriceChanged" in result.stderr
    assert "new_price" in result.stderr


def test_bad_input_from_the_shell_is_one_line_on_stderr_and_a_non_zero_exit(tmp_path):
    result = _manage_in_shell(
        "send_command", "catalog.ReleaseStock", "--data", "[" * 5000 + "]" * 5000, env={"BUS_DATA_DIR": str(tmp_path)},
    )

    assert result.returncode == 1
    assert result.stderr.strip() == "CommandError: --data is nested too deeply to read"


def test_a_database_that_is_down_is_one_line_naming_its_host_but_never_its_password(tmp_path):
    password = "do-not-print-me"
    closed_port = _a_closed_port()

    result = _manage_in_shell(
        "send_command", "catalog.ReleaseStock", "--data", json.dumps({"order_id": str(uuid.uuid4())}),
        env={"DATABASE_URL": f"postgres://shop:{password}@127.0.0.1:{closed_port}/shop", "HOME": str(tmp_path)},
    )

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"CommandError: cannot use the database shop on 127.0.0.1:{closed_port}: ")
    assert result.stderr.rstrip().endswith("nothing was written")
    assert password not in result.stderr + result.stdout


def _manage_in_shell(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def _a_closed_port() -> int:
    """A local TCP port nothing listens on: bound once to find it free, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
