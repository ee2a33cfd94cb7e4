"""Contract versions during a rolling deploy: older versions upcast, newer ones held back, unknown fields ignored."""

import datetime
from decimal import Decimal

import pytest
from celery import current_app
from celery.exceptions import Retry
from django.utils import timezone

from apps.catalog.messages import ProductPriceChanged
from apps.ordering.models import PriceListEntry
from messaging import Event
from messaging.delivery import DeadLettered, NewerVersionError, consume
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.outbox import MessageRejectedError, build
from tests.brokers import on_broker
from tests.senders import publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def price_changed():
    publish(ProductPriceChanged(sku="MUG-1", old_price=Decimal("10.00"), new_price=Decimal("12.00"),
                                price_version=1, currency="USD"))
    return OutboxMessage.objects.get().envelope


def _as_version_1(envelope: dict) -> dict:
    """The envelope as the code before version 2 wrote it: no currency."""
    data = {name: value for name, value in envelope["data"].items() if name != "currency"}
    return {**envelope, "version": 1, "data": data}


def test_the_catalog_writes_version_2_with_its_currency(price_changed):
    assert price_changed["version"] == ProductPriceChanged.version == 2
    assert price_changed["data"]["currency"] == "USD"
    assert ProductPriceChanged.readable_versions() == [1, 2]


def test_version_1_is_handled_as_version_2_in_the_catalog_currency(price_changed, settings):
    settings.CATALOG_CURRENCY = "CHF"

    report = consume(_as_version_1(price_changed), context="ordering")

    assert report["handled"] == ["ordering:catalog.ProductPriceChanged"]
    entry = PriceListEntry.objects.get(sku="MUG-1")
    assert (entry.price, entry.currency) == (Decimal("12.00"), "CHF")


def test_version_2_carries_its_own_currency(price_changed, settings):
    settings.CATALOG_CURRENCY = "CHF"

    consume(price_changed, context="ordering")

    assert PriceListEntry.objects.get(sku="MUG-1").currency == "USD"


def test_a_field_the_contract_does_not_know_is_ignored_when_consumed_but_refused_at_publish(price_changed):
    from_newer_code = {**price_changed, "data": {**price_changed["data"], "discount": "0.10"}}

    report = consume(from_newer_code, context="ordering")

    assert report["handled"] == ["ordering:catalog.ProductPriceChanged"]
    with pytest.raises(MessageRejectedError, match="discount"):
        build("catalog.ProductPriceChanged", from_newer_code["data"], kind="event")  # publish_event's way in


def test_a_newer_version_is_held_back_without_handling_or_dead_letter(price_changed):
    newer = {**price_changed, "version": 3}

    with pytest.raises(NewerVersionError, match="version 3 of catalog.ProductPriceChanged is newer than this"):
        consume(newer, context="ordering")

    assert not InboxMessage.objects.exists() and not PriceListEntry.objects.exists()
    assert not DeadLetter.objects.exists()


def test_a_newer_version_nobody_took_in_the_hold_becomes_a_dead_letter_to_retry_later(price_changed, settings):
    settings.BUS_NEWER_VERSION_HOLD = datetime.timedelta(hours=1)
    written = timezone.now() - datetime.timedelta(hours=1, minutes=1)
    newer = {**price_changed, "version": 3, "time": written.isoformat()}

    report = consume(newer, context="ordering")

    letter = DeadLetter.objects.get()
    assert report["dead_lettered"] == letter.reason == DeadLetter.Reason.NEWER_VERSION
    assert "BUS_NEWER_VERSION_HOLD" in letter.error and "version 3" in letter.error
    assert not PriceListEntry.objects.exists()


@pytest.mark.parametrize(("broker", "via"), [("embedded", ""), ("rabbitmq", "retry.")])
def test_the_worker_puts_a_newer_version_back_on_its_own_queue_uncounted(price_changed, monkeypatch, settings,
                                                                          broker, via):
    on_broker(settings, broker)
    settings.BUS_CONTEXT = "ordering"
    published = []
    monkeypatch.setattr("messaging.tasks.publish_confirmed", published.extend)
    task = current_app.tasks["catalog.ProductPriceChanged"]
    task.push_request(id="task-id", retries=2, delivery_info={"exchange": "events.catalog.ProductPriceChanged"})
    try:
        with pytest.raises(Retry):
            task.run(envelope={**price_changed, "version": 3})
    finally:
        task.pop_request()

    [held] = published
    assert held.envelope["version"] == 3
    assert held.routing_key == "ordering.events.catalog.ProductPriceChanged"
    assert getattr(held.exchange, "name", held.exchange).startswith(via)
    assert held.retries == 2  # not an attempt: the message never failed
    assert not DeadLetter.objects.exists()


def test_a_version_older_than_the_upcasters_reach_is_dead_lettered_saying_which_are_read(price_changed, monkeypatch):
    monkeypatch.delitem(ProductPriceChanged.upcasters, 1)

    report = consume(_as_version_1(price_changed), context="ordering")

    assert report["dead_lettered"] == DeadLetter.Reason.INVALID_ENVELOPE
    assert "reads versions 2 to 2 (no upcaster from version 1)" in DeadLetter.objects.get().error


def test_an_upcaster_that_fails_makes_a_dead_letter_naming_the_upcast(price_changed, monkeypatch, settings):
    settings.BUS_CONTEXT = "ordering"

    def broken(data):
        raise KeyError("price")

    monkeypatch.setitem(ProductPriceChanged.upcasters, 1, broken)

    with pytest.raises(DeadLettered, match="invalid_data"):
        _run_for_ordering(_as_version_1(price_changed))

    assert "upcasting version 1 of catalog.ProductPriceChanged failed: KeyError" in DeadLetter.objects.get().error


def _run_for_ordering(envelope: dict):
    task = current_app.tasks["catalog.ProductPriceChanged"]
    task.push_request(id="task-id", retries=0, delivery_info={"exchange": "events.catalog.ProductPriceChanged"})
    try:
        return task.run(envelope=envelope)
    finally:
        task.pop_request()


class Measured(Event):
    """A contract of this test module, outside every app: no registry sees it."""

    version = 3
    grams: int


def test_upcasters_chain_from_the_oldest_version_they_reach():
    @Measured.upcaster(from_version=2)
    def grams_from_kilograms(data):
        return {"grams": round(data["kilograms"] * 1000)}

    @Measured.upcaster(from_version=1)
    def kilograms_from_pounds(data):
        return {"kilograms": data["pounds"] * 0.45359237}

    assert Measured.readable_versions() == [1, 2, 3]
    assert Measured.upcast({"pounds": 2}, 1) == {"grams": 907}
    assert Measured.upcast({"grams": 5}, 3) == {"grams": 5}
    assert Event.upcasters == {} and ProductPriceChanged.upcasters.keys() == {1}


def test_an_upcaster_must_lead_to_a_version_the_contract_has_and_be_the_only_one():
    with pytest.raises(ValueError, match="at version 3: an upcaster from version 3 would lead to no version"):
        Measured.upcaster(from_version=3)(lambda data: data)
    with pytest.raises(ValueError, match="already has an upcaster from version 1"):
        ProductPriceChanged.upcaster(from_version=1)(lambda data: data)
