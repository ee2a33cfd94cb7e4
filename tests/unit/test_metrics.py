"""What the bus's processes record (``messaging.metrics``): the relay's published rows and
batches, each delivery's outcome on both paths (Celery's tracer, a batch in one
transaction) and at the worker's intake, each handler's run; nothing at all when off.

The recorder writes into a folder of the test's own, as a process of a host with
``BUS_METRICS_DIR`` does (``tests.metrics``); ``/metrics`` itself: test_metrics_endpoint.
"""

from decimal import Decimal

import pytest
from celery.exceptions import Retry

from apps.basket.models import BasketLine
from apps.basket.services import basket_add_item
from messaging import batch_run, metrics
from messaging.brokers.base import PublishRefusedError
from messaging.delivery import DeadLettered, consume
from tests.brokers import on_broker
from tests.metrics import metrics_on, recorded  # noqa: F401  (a fixture)
from tests.unit.test_batch_run import _item, _price_change, basket_worker  # noqa: F401  (a fixture)
from tests.unit.test_delivery import _run_price_changed_task, failing_basket_handler, price_changed  # noqa: F401
from tests.unit.test_relay import ConfirmingChannel, _relay_on, three_rows  # noqa: F401
from tests.unit.test_worker_consumer import _ordering_consumer, _place_order_delivery

pytestmark = pytest.mark.django_db

BASKET_HANDLER = "basket:catalog.ProductPriceChanged"
PRICE_CHANGED = "catalog.ProductPriceChanged"


def _deliveries(folder, outcome: str, *, context: str = "basket", message_type: str = PRICE_CHANGED) -> float:
    return recorded(folder, "bus_deliveries_total", context=context, message_type=message_type, outcome=outcome)


def test_with_no_metrics_folder_the_bus_records_nothing_and_writes_no_file(settings, tmp_path, price_changed):
    # given the test settings' BUS_METRICS_DIR: empty
    assert settings.BUS_METRICS_DIR == ""
    assert type(metrics.recorder) is metrics.NoRecorder
    assert type(metrics.recorder_for("")) is metrics.NoRecorder
    # when a delivery is handled, then nothing is kept anywhere (the recorder has nowhere to write)
    settings.BUS_CONTEXT = "basket"
    _run_price_changed_task(envelope=price_changed)
    assert metrics.clear_folder() == 0


def test_a_delivery_run_by_celerys_tracer_is_counted_handled_then_duplicate_with_its_handlers_run(
    metrics_on, price_changed, settings
):
    settings.BUS_CONTEXT = "basket"
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))

    _run_price_changed_task(envelope=price_changed)
    _run_price_changed_task(envelope=price_changed)  # redelivered: the inbox has it

    assert _deliveries(metrics_on, metrics.HANDLED) == 1
    assert _deliveries(metrics_on, metrics.DUPLICATE) == 1
    duration = {"context": "basket", "consumer": BASKET_HANDLER, "message_type": PRICE_CHANGED}
    assert recorded(metrics_on, "bus_handler_duration_seconds_count", **duration) == 1
    assert recorded(metrics_on, "bus_handler_duration_seconds_sum", **duration) > 0


def test_a_failing_delivery_is_counted_retried_then_dead_lettered_on_its_last_attempt(
    metrics_on, price_changed, failing_basket_handler, settings
):
    with pytest.raises(Retry):
        _run_price_changed_task(envelope=price_changed, retries=0)
    with pytest.raises(DeadLettered):
        _run_price_changed_task(envelope=price_changed, retries=settings.BUS_MAX_RETRIES)

    assert _deliveries(metrics_on, metrics.RETRIED) == 1
    assert _deliveries(metrics_on, metrics.DEAD_LETTERED) == 1
    assert _deliveries(metrics_on, metrics.HANDLED) == 0


def test_deliveries_handled_in_one_batch_are_counted_each_as_celerys_tracer_would(metrics_on, basket_worker):
    first, second = _price_change("A"), _price_change("B")

    outcomes = batch_run.run_batch([_item(first), _item(second), _item(second)])

    assert None not in outcomes
    assert _deliveries(metrics_on, metrics.HANDLED) == 2
    assert _deliveries(metrics_on, metrics.DUPLICATE) == 1


def test_a_delivery_that_fails_in_a_batch_is_left_uncounted_for_its_run_alone(metrics_on, basket_worker, monkeypatch):
    basket_add_item(customer_id="c1", sku="BAD", quantity=1, unit_price=Decimal("10.00"))

    def fail(**kwargs):
        raise RuntimeError("the handler fails")

    monkeypatch.setattr("apps.basket.handlers.basket_reprice", fail)

    assert batch_run.run_batch([_item(_price_change("BAD"))]) == [None]
    # Counted once, where it then runs alone: in Celery's tracer (messaging.tasks).
    assert sum(_deliveries(metrics_on, outcome) for outcome in (metrics.HANDLED, metrics.DUPLICATE)) == 0


def test_a_dead_letter_made_at_the_workers_intake_is_counted(metrics_on, monkeypatch, settings):
    def celery_fails(message):
        raise TypeError("a header Celery could not read")

    on_task_received = _ordering_consumer(monkeypatch, settings, celery_fails)
    message, _ = _place_order_delivery()

    on_task_received(message)

    assert _deliveries(metrics_on, metrics.DEAD_LETTERED, context="ordering", message_type="ordering.PlaceOrder") == 1


def test_a_message_type_no_contract_has_is_counted_as_unknown():
    assert metrics.known_type("catalog.ProductPriceChanged") == "catalog.ProductPriceChanged"
    assert metrics.known_type("attacker.Chosen") == metrics.UNKNOWN_TYPE
    assert metrics.known_type(["not", "a", "string"]) == metrics.UNKNOWN_TYPE


def test_the_relay_counts_the_rows_the_broker_confirmed_and_each_batch(metrics_on, three_rows, settings):
    on_broker(settings, "rabbitmq")  # the fake channel answers as RabbitMQ: with confirms

    with pytest.raises(PublishRefusedError):
        _relay_on(ConfirmingChannel(nack={2})).publish_batch()

    assert recorded(metrics_on, "bus_published_messages_total", message_type=PRICE_CHANGED) == 2  # one refused
    assert recorded(metrics_on, "bus_relay_batch_size_count") == 1
    assert recorded(metrics_on, "bus_relay_batch_size_sum") == 3
    assert recorded(metrics_on, "bus_relay_confirm_wait_seconds_count") == 1


def test_clearing_the_folder_before_a_start_forgets_an_earlier_runs_counts(metrics_on):
    metrics.recorder.delivered("basket", PRICE_CHANGED, metrics.HANDLED)
    (metrics_on / "notes.txt").write_text("not ours")

    assert metrics.clear_folder() >= 1

    assert _deliveries(metrics_on, metrics.HANDLED) == 0
    assert [path.name for path in metrics_on.iterdir()] == ["notes.txt"]


def test_a_folder_that_cannot_be_written_changes_no_delivery_and_turns_recording_off(
    monkeypatch, settings, tmp_path, caplog
):
    # given metrics "on" into a folder that cannot be made (a file stands where it would be)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(metrics, "recorder", metrics.Recorder(blocked / "metrics"))
    settings.BUS_CONTEXT = "basket"
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    envelope = _price_change("MUG-1")

    # when a delivery is handled
    outcome = consume(envelope, context="basket")

    # then it is handled as ever, the failure is logged once, and this process records no more
    assert outcome["handled"] == ["basket:catalog.ProductPriceChanged"]
    assert BasketLine.objects.get().unit_price == Decimal("12.00")
    assert isinstance(metrics.recorder, metrics.NoRecorder) and not isinstance(metrics.recorder, metrics.Recorder)
    assert "recording metrics into" in caplog.text


def test_manage_py_check_refuses_a_metrics_folder_this_process_cannot_write(settings, tmp_path):
    from messaging.checks import check_metrics_folder

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    settings.BUS_METRICS_DIR = str(blocked / "metrics")
    [error] = check_metrics_folder(None)
    assert error.id == "messaging.E012" and "cannot be written" in error.msg

    settings.BUS_METRICS_DIR = str(tmp_path / "metrics")
    assert check_metrics_folder(None) == []
