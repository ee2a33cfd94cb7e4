"""Sending and publishing: validated, enveloped, written in the caller's transaction."""

import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from apps.catalog.messages import ProductPriceChanged, ReserveStock
from apps.catalog.services import product_change_price
from messaging import causation
from messaging.contracts import Command, Envelope
from messaging.models import OutboxMessage
from messaging.outbox import MessageRejectedError, Outbox, build

pytestmark = pytest.mark.django_db

#: The catalog's outbox, as its services have it; the operator's, as a shell has it.
catalog = Outbox.for_context("catalog")
operator = Outbox.operator()


def test_contract_type_is_derived_from_its_context_and_class():
    assert ProductPriceChanged.type_name() == "catalog.ProductPriceChanged"
    assert ProductPriceChanged.context() == "catalog"
    assert ReserveStock.kind == "command"


def test_publish_writes_one_outbox_row_with_a_full_envelope():
    envelope = catalog.publish(ProductPriceChanged(sku="MUG-1", old_price=Decimal("1.00"), new_price=Decimal("2.00"), price_version=1, currency="EUR"))

    row = OutboxMessage.objects.get()
    assert row.message_id == envelope.id
    assert row.published_at is None
    stored = Envelope.model_validate(row.envelope)
    assert stored.type == "catalog.ProductPriceChanged"
    assert stored.kind == "event"
    assert stored.version == 2
    assert stored.source == "catalog"
    assert stored.correlationid == envelope.id  # a new conversation starts here
    assert stored.causationid is None
    assert stored.data == {"sku": "MUG-1", "old_price": "1.00", "new_price": "2.00", "price_version": 1, "currency": "EUR"}


def test_invalid_data_is_refused_and_nothing_is_written():
    with pytest.raises(MessageRejectedError, match="Invalid data for catalog.ProductPriceChanged"):
        build("catalog.ProductPriceChanged", {"sku": "MUG-1", "new_price": "-3"}, kind="event")

    bypassed = ProductPriceChanged.model_construct(sku="", old_price=Decimal("1"), new_price=Decimal("-1"))
    with pytest.raises(MessageRejectedError):
        catalog.publish(bypassed)

    assert not OutboxMessage.objects.exists()


def test_unknown_type_and_wrong_kind_are_refused():
    with pytest.raises(MessageRejectedError, match="Unknown event type 'catalog.Nope'"):
        build("catalog.Nope", {}, kind="event")
    with pytest.raises(MessageRejectedError, match="Unknown event type 'catalog.ReserveStock'"):
        build("catalog.ReserveStock", {"order_id": str(uuid.uuid4()), "lines": []}, kind="event")
    with pytest.raises(MessageRejectedError, match="send\\(\\) takes a Command"):
        operator.send(ProductPriceChanged(sku="A", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1, currency="EUR"))


def test_oversized_payload_is_refused(settings):
    settings.BUS_MAX_PAYLOAD_BYTES = 100
    with pytest.raises(MessageRejectedError, match="over the limit of 100"):
        catalog.publish(ProductPriceChanged(sku="X" * 64, old_price=Decimal("1"), new_price=Decimal("2"), price_version=1, currency="EUR"))
    assert not OutboxMessage.objects.exists()


@pytest.fixture
def free_form_command():
    """A contract whose data may hold any JSON, as a platform user's contract may."""

    class FreeFormNote(Command):
        __module__ = "apps.catalog.messages"  # owned by a context, like every contract
        body: Any = None

    return FreeFormNote


def test_a_nul_character_in_a_string_is_refused_at_publish_as_postgresql_cannot_store_it():
    with pytest.raises(MessageRejectedError, match=r"a NUL character \(\\u0000\) at data\['sku'\]"):
        catalog.publish(ProductPriceChanged(sku="MUG\x00", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1, currency="EUR"))

    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"nested": ["fine", "not\x00fine"]}, r"at data\['body'\]\['nested'\]\[1\]"),
        ({"key\x00": "fine"}, r"at a key of data\['body'\]"),
    ],
)
def test_a_nul_character_anywhere_in_free_form_data_is_refused(free_form_command, body, where):
    with pytest.raises(MessageRejectedError, match=r"NUL character .* " + where):
        operator.send(free_form_command(body=body))

    assert not OutboxMessage.objects.exists()


def test_data_nested_deeper_than_the_limit_is_refused(free_form_command, settings):
    settings.BUS_MAX_PAYLOAD_DEPTH = 5
    within = {"a": {"b": {"c": ["d"]}}}  # data > body > a > b > c: five levels
    beyond = {"a": {"b": {"c": [["d"]]}}}

    operator.send(free_form_command(body=within))
    with pytest.raises(MessageRejectedError, match=r"nesting deeper than 5 levels \(BUS_MAX_PAYLOAD_DEPTH\)"):
        operator.send(free_form_command(body=beyond))

    assert OutboxMessage.objects.count() == 1


def test_a_thousand_levels_of_nesting_are_refused_with_a_clear_error(free_form_command):
    deep = "end"
    for _ in range(1000):
        deep = [deep]

    with pytest.raises(MessageRejectedError, match="nesting deeper than 32 levels"):
        operator.send(free_form_command(body=deep))


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused_rather_than_written_as_null(free_form_command, number):
    with pytest.raises(MessageRejectedError, match=r"is not a JSON number at data\['body'\]\[0\]"):
        operator.send(free_form_command(body=[number]))

    assert not OutboxMessage.objects.exists()


def test_a_lone_surrogate_is_refused_as_it_is_not_unicode(free_form_command):
    with pytest.raises(MessageRejectedError, match="not valid Unicode"):
        operator.send(free_form_command(body={"text": "broken \ud800"}))

    assert not OutboxMessage.objects.exists()


def test_an_integer_too_long_to_write_as_json_is_refused(free_form_command):
    with pytest.raises(MessageRejectedError, match="cannot be written as JSON"):
        operator.send(free_form_command(body=10**5000))

    assert not OutboxMessage.objects.exists()


def test_a_rolled_back_transaction_publishes_nothing(catalog_product):
    with pytest.raises(RuntimeError), transaction.atomic():
        product_change_price(sku="MUG-1", new_price=Decimal("99.00"))
        raise RuntimeError("the caller fails after the service")

    assert not OutboxMessage.objects.exists()
    catalog_product.refresh_from_db()
    assert catalog_product.price == Decimal("10.00")


def test_messages_sent_while_handling_inherit_correlation_and_causation():
    cause = catalog.publish(ProductPriceChanged(sku="A", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1, currency="EUR"))

    with causation.handling(cause, "ordering"):
        effect = Outbox.for_context("ordering").send(ReserveStock(order_id=uuid.uuid4(), lines=[{"sku": "A", "quantity": 1}]))

    assert effect.correlationid == cause.correlationid
    assert effect.causationid == cause.id
    assert effect.source == "ordering"


def test_a_command_sent_from_a_context_service_names_that_context_as_source(catalog_product):
    from apps.basket.services import basket_add_item, basket_checkout

    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_checkout(customer_id="c1")

    row = OutboxMessage.objects.get(message_type="ordering.PlaceOrder")
    assert row.envelope["source"] == "basket"


def test_a_services_outbox_sends_as_the_context_of_its_module_whoever_calls_it():
    from apps.basket.services import outbox as basket_outbox

    # Called from this test module, which is in no context: the outbox, not the caller, names the sender.
    envelope = basket_outbox.send(ReserveStock(order_id=uuid.uuid4(), lines=[{"sku": "MUG-1", "quantity": 1}]))

    assert envelope.source == "basket"
    assert OutboxMessage.objects.get().source == "basket"


def test_an_outbox_for_a_module_outside_every_context_says_so_at_its_first_write():
    outbox = Outbox.for_module("tests.unit.test_outbox")

    with pytest.raises(ImproperlyConfigured, match=r"\('tests.unit.test_outbox'\): that module is in no installed app"):
        outbox.send(ReserveStock(order_id=uuid.uuid4(), lines=[{"sku": "A", "quantity": 1}]))

    assert not OutboxMessage.objects.exists()


def test_an_event_is_refused_unless_its_owner_publishes_it():
    price_changed = ProductPriceChanged(sku="A", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1, currency="EUR")

    for sender in (Outbox.for_context("basket"), operator):
        with pytest.raises(MessageRejectedError, match=r"cannot publish catalog.ProductPriceChanged: an event is "
                                                       r"published by the context that owns it \(catalog\)"):
            sender.publish(price_changed)

    assert not OutboxMessage.objects.exists()


def test_an_unknown_sender_is_refused():
    with pytest.raises(MessageRejectedError, match="'warehouse' is not a context of this platform"):
        Outbox.for_context("warehouse").send(ReserveStock(order_id=uuid.uuid4(), lines=[{"sku": "A", "quantity": 1}]))


def test_a_message_written_as_another_context_than_the_one_handling_is_refused():
    cause = catalog.publish(ProductPriceChanged(sku="A", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1, currency="EUR"))

    with causation.handling(cause, "ordering"), pytest.raises(
        MessageRejectedError, match=r"written as basket while ordering handles catalog.ProductPriceChanged"
    ):
        Outbox.for_context("basket").send(ReserveStock(order_id=uuid.uuid4(), lines=[{"sku": "A", "quantity": 1}]))

    assert OutboxMessage.objects.count() == 1
