"""A batch of deliveries in one transaction (``messaging.batch_run``), in this process.

What the pool process returns for each delivery (``None``: not handled in the
batch, to go again alone), what it stores and what it leaves undone. On a real
worker: tests/integration/test_flower_truth.py.
"""

import json
import uuid
from decimal import Decimal

import pytest
from celery import current_app, states
from django.db import IntegrityError, connection, transaction
from django_celery_results.models import TaskResult

from apps.basket.models import BasketLine
from apps.basket.services import basket_add_item
from apps.catalog.messages import ProductPriceChanged
from messaging import batch_run
from messaging.brokers.base import publish_envelope
from messaging.models import InboxMessage
from messaging.task_message import delivery_id
from messaging.topology import Topology
from tests.senders import publish

pytestmark = pytest.mark.django_db

BASKET_HANDLER = "basket:catalog.ProductPriceChanged"


class _RecordingProducer:
    def publish(self, body, **kwargs):
        self.body, self.kwargs = body, kwargs


def _item(envelope: dict) -> tuple:
    """What the worker's main process hands the pool for one delivery to basket."""
    producer = _RecordingProducer()
    route = Topology().route(envelope["kind"], envelope["type"])
    publish_envelope(producer, envelope, exchange=route.exchange, routing_key=route.routing_key)
    headers = producer.kwargs["headers"]
    task_id = delivery_id(envelope["id"], "basket")
    request = {**headers, "id": task_id, "delivery_info": {"routing_key": route.routing_key}, "hostname": "test"}
    return headers["task"], task_id, request, json.dumps(producer.body).encode(), "application/json", "utf-8"


def _message_id(item: tuple) -> uuid.UUID:
    _, kwargs, _ = json.loads(item[3])
    return uuid.UUID(kwargs["envelope"]["id"])


def _price_change(sku: str, version: int = 1) -> dict:
    return publish(ProductPriceChanged(sku=sku, old_price=Decimal("10.00"), new_price=Decimal("12.00"),
                                       price_version=version, currency="EUR")).model_dump(mode="json")


@pytest.fixture(autouse=True)
def basket_worker(monkeypatch, settings):
    """This process is a pool process of basket's worker."""
    settings.BUS_CONTEXT = "basket"
    # A pool process drops a stale connection first; here the connection is the test's transaction.
    monkeypatch.setattr(batch_run, "close_old_connections", lambda: None)


def _alone(items: list[tuple], outcomes: list) -> list[str]:
    """The deliveries the batch did not handle: the main process sends each again alone."""
    return [task_id for (_, task_id, *_), outcome in zip(items, outcomes, strict=True) if outcome is None]


def test_every_delivery_of_a_batch_is_handled_once_with_its_own_result():
    skus = [f"MUG-{i}" for i in range(3)]
    for sku in skus:
        basket_add_item(customer_id=f"c-{sku}", sku=sku, quantity=1, unit_price=Decimal("10.00"))
    items = [_item(_price_change(sku)) for sku in skus]

    outcomes = batch_run.run_batch(items)

    assert _alone(items, outcomes) == []
    assert [failed for failed, _, _ in outcomes] == [0, 0, 0]
    assert all(runtime > 0 for _, _, runtime in outcomes)
    assert all(BASKET_HANDLER in result for _, result, _ in outcomes)
    assert set(BasketLine.objects.values_list("unit_price", flat=True)) == {Decimal("12.00")}
    assert InboxMessage.objects.filter(consumer=BASKET_HANDLER).count() == 3
    rows = {row.task_id: row for row in TaskResult.objects.all()}
    assert set(rows) == {task_id for _, task_id, *_ in items}
    for row in rows.values():
        assert row.status == states.SUCCESS
        assert json.loads(row.result) == {"context": "basket", "handled": [BASKET_HANDLER], "duplicates": []}
        assert row.task_name == "catalog.ProductPriceChanged" and row.worker == "test"


def test_a_message_handled_before_or_twice_in_the_batch_is_a_duplicate():
    handled_before, twice = _price_change("A"), _price_change("B")
    batch_run.run_batch([_item(handled_before)])

    outcomes = batch_run.run_batch([_item(handled_before), _item(twice), _item(twice)])

    assert None not in outcomes
    results = [json.loads(result.replace("'", '"')) for _, result, _ in outcomes]
    assert [r["handled"] for r in results] == [[], [BASKET_HANDLER], []]
    assert [r["duplicates"] for r in results] == [[BASKET_HANDLER], [], [BASKET_HANDLER]]
    assert InboxMessage.objects.count() == 2


def test_a_delivery_whose_handler_fails_is_undone_and_runs_alone_after_the_others_commit(monkeypatch):
    for sku in ("GOOD", "BAD", "LATE"):
        basket_add_item(customer_id=f"c-{sku}", sku=sku, quantity=1, unit_price=Decimal("10.00"))
    items = [_item(_price_change(sku)) for sku in ("GOOD", "BAD", "LATE")]

    def fail_on_bad(*, sku, **kwargs):
        BasketLine.objects.filter(sku=sku).update(unit_price=Decimal("0.01"))
        if sku == "BAD":
            raise ConnectionError("payment gateway down")

    monkeypatch.setattr("apps.basket.handlers.basket_reprice", fail_on_bad)
    outcomes = batch_run.run_batch(items)

    assert _alone(items, outcomes) == [items[1][1]]
    assert outcomes[0][0] == outcomes[2][0] == 0
    prices = dict(BasketLine.objects.values_list("sku", "unit_price"))
    assert prices == {"GOOD": Decimal("0.01"), "BAD": Decimal("10.00"), "LATE": Decimal("0.01")}
    # Its inbox row is given back (the run alone claims it again), and it has no result yet.
    assert set(InboxMessage.objects.values_list("message_id", flat=True)) == {_message_id(items[0]), _message_id(items[2])}
    assert set(TaskResult.objects.values_list("task_id", flat=True)) == {items[0][1], items[2][1]}


@pytest.mark.parametrize("results_stored", [True, False], ids=["results", "no-results"])
def test_a_handler_that_swallows_a_database_error_in_its_block_is_never_rolled_back_unseen(
    monkeypatch, results_stored
):
    # Alone, the service's block is a savepoint and the handler may go on. In a batch on
    # PostgreSQL there is none, and Django would roll the delivery back without a word
    # at the end of its own savepoint: it runs alone instead. (Django's SQLite backend
    # makes a savepoint whatever the features say, so there it is handled, as alone.)
    def swallow(*, sku, **kwargs):
        if sku == "SWALLOW":
            try:
                with transaction.atomic():
                    raise IntegrityError("duplicate key")
            except IntegrityError:
                pass

    monkeypatch.setattr("apps.basket.handlers.basket_reprice", swallow)
    # Without results, no statement follows the last handler to trip over the spoiled transaction.
    monkeypatch.setattr(current_app.tasks["catalog.ProductPriceChanged"], "ignore_result", not results_stored)
    items = [_item(_price_change("FINE")), _item(_price_change("SWALLOW"))]

    outcomes = batch_run.run_batch(items)

    if connection.vendor == "sqlite":
        assert _alone(items, outcomes) == [] and InboxMessage.objects.count() == 2
    else:
        assert _alone(items, outcomes) == [items[1][1]]
        assert InboxMessage.objects.count() == 1


def test_a_delivery_refused_here_runs_alone_and_the_rest_of_the_batch_is_handled():
    broken = {**_price_change("A"), "data": {"sku": "A"}}  # breaks the contract: a dead letter, alone
    items = [_item(_price_change("B")), _item(broken)]

    outcomes = batch_run.run_batch(items)

    assert _alone(items, outcomes) == [items[1][1]]
    assert outcomes[0][0] == 0 and InboxMessage.objects.count() == 1


def test_a_batch_whose_transaction_fails_after_handling_leaves_nothing_and_every_delivery_goes_alone(monkeypatch):
    import psycopg
    from django.db import OperationalError

    basket_add_item(customer_id="c1", sku="A", quantity=1, unit_price=Decimal("10.00"))

    def database_gone(backend, results):
        raise OperationalError("connection failed") from psycopg.OperationalError("connection failed")

    monkeypatch.setattr(batch_run, "_store_results", database_gone)  # after every handler ran
    items = [_item(_price_change("A")), _item(_price_change("B"))]

    outcomes = batch_run.run_batch(items)

    assert outcomes == [None, None]
    assert not InboxMessage.objects.exists() and not TaskResult.objects.exists()
    assert BasketLine.objects.get().unit_price == Decimal("10.00")


@pytest.mark.parametrize("failing", ["first", "second"])
def test_a_delivery_with_two_handlers_here_gives_back_both_inbox_rows_when_one_fails(monkeypatch, failing):
    # Alone, each handler has a transaction of its own; in a batch both are one delivery's,
    # undone together: neither may keep its inbox row, or the run alone would skip it.
    from messaging.registry import Handler, registry

    def also_on_price_changed(event):
        if failing == "second":
            raise ConnectionError("down")

    if failing == "first":
        def fail(**kwargs):
            raise ConnectionError("down")

        monkeypatch.setattr("apps.basket.handlers.basket_reprice", fail)
    real = registry.handlers_for("catalog.ProductPriceChanged", "basket")
    extra = Handler(func=also_on_price_changed, kind="event", target="catalog.ProductPriceChanged")
    monkeypatch.setattr(registry, "handlers_for", lambda message_type, context: [*real, extra])
    items = [_item(_price_change("A")), _item(_price_change("B"))]

    outcomes = batch_run.run_batch(items)

    assert _alone(items, outcomes) == [items[0][1], items[1][1]]
    assert not InboxMessage.objects.exists()


def test_the_services_blocks_get_their_savepoints_back_after_a_batch():
    batch_run.run_batch([_item(_price_change("A"))])

    assert connection.features.uses_savepoints is True
    assert current_app.backend.store_rows  # the platform's backend: one statement for the batch
