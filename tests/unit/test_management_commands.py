"""publish_event, send_command and bus_topology, as users and scripts call them (from the
shell, with its exit code and stderr: ``tests/process/test_management_commands.py``)."""

import datetime
import json
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from messaging.models import OutboxMessage


PRICE_CHANGE = '{"sku": "MUG-1", "old_price": "1.00", "new_price": "2.00", "price_version": 1, "currency": "EUR"}'


def _call(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue().strip()


def _call_with_stderr(*args, **options) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue().strip(), err.getvalue().strip()


@pytest.mark.django_db
def test_publish_event_writes_the_outbox_and_prints_the_message_id():
    correlation = uuid.uuid4()
    printed = _call("publish_event", "catalog.ProductPriceChanged", "--as-context", "catalog",
                    "--data", PRICE_CHANGE, "--correlation-id", str(correlation))

    row = OutboxMessage.objects.get(message_id=uuid.UUID(printed))
    assert row.correlation_id == correlation
    assert row.envelope["source"] == "catalog"


@pytest.mark.django_db
def test_publish_event_says_loudly_in_whose_name_it_published_and_to_whom():
    printed, said = _call_with_stderr("publish_event", "catalog.ProductPriceChanged", "--as-context", "catalog",
                                      "--data", PRICE_CHANGE)

    assert said == (f"PUBLISHED IN THE NAME OF catalog: catalog.ProductPriceChanged (source 'catalog') to basket, "
                    f"ordering; catalog's own data did not change; conversation {printed}")


@pytest.mark.django_db
def test_publish_event_refuses_to_speak_for_a_context_without_its_name_confirmed():
    with pytest.raises(CommandError, match=r"catalog.ProductPriceChanged is a fact of catalog: published from here, "
                                           r"its subscribers \(basket, ordering\) act on it as catalog's word.*"
                                           r"add --as-context catalog$"):
        call_command("publish_event", "catalog.ProductPriceChanged", "--data", PRICE_CHANGE)
    with pytest.raises(CommandError, match=r"--as-context ordering does not match: catalog.ProductPriceChanged "
                                           r"is a fact of catalog"):
        call_command("publish_event", "catalog.ProductPriceChanged", "--as-context", "ordering", "--data", PRICE_CHANGE)
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_send_command_writes_the_outbox_as_the_operator_and_says_so():
    printed, said = _call_with_stderr("send_command", "catalog.ReleaseStock",
                                      "--data", json.dumps({"order_id": str(uuid.uuid4())}))

    row = OutboxMessage.objects.get(message_id=uuid.UUID(printed))
    assert (row.kind, row.envelope["source"]) == ("command", "operator")
    assert said == ("sent catalog.ReleaseStock to catalog in the name of 'operator' (a command from the command "
                    f"line); conversation {printed}")


@pytest.mark.django_db
def test_data_is_read_from_a_file_after_an_at_sign(tmp_path):
    order_id = uuid.uuid4()
    (tmp_path / "release.json").write_text(json.dumps({"order_id": str(order_id)}))

    printed = _call("send_command", "catalog.ReleaseStock", "--data", f"@{tmp_path / 'release.json'}")

    assert OutboxMessage.objects.get(message_id=uuid.UUID(printed)).envelope["data"] == {"order_id": str(order_id)}


@pytest.mark.django_db
def test_data_is_read_from_standard_input_for_a_dash():
    printed = _call("publish_event", "catalog.ProductPriceChanged", "--as-context", "catalog", "--data", "-",
                    stdin=StringIO(PRICE_CHANGE))

    assert OutboxMessage.objects.get(message_id=uuid.UUID(printed)).envelope["data"]["new_price"] == "2.00"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("file_name", "content", "error"),
    [
        ("missing.json", None, "--data @{path}: cannot read {path}: No such file or directory"),
        ("", None, "--data @{path}: cannot read {path}: Is a directory"),
        ("latin1.json", "{\"order_id\": \"caf\xe9\"}".encode("latin-1"), "--data @{path}: {path} is not UTF-8 text"),
        ("broken.json", b"{not json", "--data @{path} is not valid JSON: Expecting property name"),
        ("list.json", b"[1]", "--data @{path} must be a JSON object"),
    ],
)
def test_a_data_file_that_cannot_be_used_is_a_clear_error_naming_it(tmp_path, file_name, content, error):
    path = tmp_path / file_name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(CommandError) as refused:
        call_command("send_command", "catalog.ReleaseStock", "--data", f"@{path}")

    assert str(refused.value).startswith(error.format(path=path))
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_data_at_sign_without_a_file_name_is_refused():
    with pytest.raises(CommandError, match="--data @ needs a file name"):
        call_command("send_command", "catalog.ReleaseStock", "--data", "@")


@pytest.mark.django_db
def test_bad_json_on_standard_input_is_named_as_such():
    with pytest.raises(CommandError, match=r"^--data - \(standard input\) is not valid JSON"):
        call_command("send_command", "catalog.ReleaseStock", "--data", "-", stdin=StringIO(""))


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
          '{"sku": "MUG\\u0000", "old_price": "1.00", "new_price": "2.00", "price_version": 1, "currency": "EUR"}'],
         "a NUL character"),
        (["send_command", "catalog.ReleaseStock", "--data", "[" * 5000 + "]" * 5000], "--data is nested too deeply"),
        (["send_command", "catalog.ReleaseStock", "--data", '{"order_id": ' + "1" * 5000 + "}"],
         "--data is not valid JSON: Exceeds the limit"),
        (["publish_event", "catalog.ProductPriceChanged", "--data",
          '{"sku": "MUG", "old_price": NaN, "new_price": Infinity, "price_version": 1, "currency": "EUR"}'], "finite number"),
        # Bytes that are not UTF-8 reach Python's argv as lone surrogates.
        (["publish_event", "catalog.ProductPriceChanged", "--data",
          '{"sku": "MUG\udcff", "old_price": "1.00", "new_price": "2.00", "price_version": 1, "currency": "EUR"}'], "unicode string"),
    ],
)
def test_bad_type_or_data_is_a_clear_error_and_writes_nothing(args, error):
    if args[0] == "publish_event":
        args = [*args, "--as-context", "catalog"]
    with pytest.raises(CommandError, match=error.replace("(", r"\(")):
        call_command(*args)
    assert not OutboxMessage.objects.exists()


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


def _published_rows(*seconds_ago: int) -> list[OutboxMessage]:
    """Outbox rows, each published that many seconds ago."""
    rows = []
    for ago in seconds_ago:
        _call("publish_event", "catalog.ProductPriceChanged", "--as-context", "catalog", "--data", PRICE_CHANGE)
        row = OutboxMessage.objects.latest("id")
        row.published_at = timezone.now() - datetime.timedelta(seconds=ago)
        row.save(update_fields=["published_at"])
        rows.append(row)
    return rows


@pytest.mark.django_db
def test_republish_outbox_sends_again_only_the_rows_published_in_the_last_stretch():
    old, recent = _published_rows(600, 5)

    output = _call("republish_outbox", "--last", "60")

    assert output.startswith("marked 1 rows published since")
    assert OutboxMessage.objects.get(id=recent.id).published_at is None
    assert OutboxMessage.objects.get(id=old.id).published_at == old.published_at


@pytest.mark.django_db
def test_republish_outbox_since_a_time_and_as_a_dry_run():
    old, recent = _published_rows(600, 5)
    since = (recent.published_at - datetime.timedelta(seconds=1)).isoformat()

    assert _call("republish_outbox", "--since", since, "--dry-run").startswith("would send again 1 rows")
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0
    _call("republish_outbox", "--since", since)
    assert list(OutboxMessage.objects.filter(published_at__isnull=True)) == [recent]


@pytest.mark.parametrize(("args", "error"), [
    (["--last", "soon"], "--last 'soon' is not a duration"),
    (["--last", "0"], "--last '0' is not a duration"),
    (["--since", "yesterday"], "--since 'yesterday' is not a time"),
])
def test_republish_outbox_refuses_what_is_not_a_time(args, error):
    with pytest.raises(CommandError, match=error):
        _call("republish_outbox", *args)
