"""Sending and publishing: validated, enveloped, written in the caller's transaction."""

import uuid
from decimal import Decimal

import pytest
from django.db import transaction

from apps.catalog.messages import ProductPriceChanged, ReserveStock
from apps.catalog.services import product_change_price
from messaging import causation
from messaging.contracts import Envelope
from messaging.models import OutboxMessage
from messaging.outbox import MessageRejectedError, build, publish, send

pytestmark = pytest.mark.django_db


def test_contract_type_is_derived_from_its_context_and_class():
    assert ProductPriceChanged.type_name() == "catalog.ProductPriceChanged"
    assert ProductPriceChanged.context() == "catalog"
    assert ReserveStock.kind == "command"


def test_publish_writes_one_outbox_row_with_a_full_envelope():
    envelope = publish(ProductPriceChanged(sku="MUG-1", old_price=Decimal("1.00"), new_price=Decimal("2.00"), price_version=1))

    row = OutboxMessage.objects.get()
    assert row.message_id == envelope.id
    assert row.published_at is None
    stored = Envelope.model_validate(row.envelope)
    assert stored.type == "catalog.ProductPriceChanged"
    assert stored.kind == "event"
    assert stored.version == 1
    assert stored.source == "catalog"
    assert stored.correlation_id == envelope.id  # a new conversation starts here
    assert stored.causation_id is None
    assert stored.data == {"sku": "MUG-1", "old_price": "1.00", "new_price": "2.00", "price_version": 1}


def test_invalid_data_is_refused_and_nothing_is_written():
    with pytest.raises(MessageRejectedError, match="Invalid data for catalog.ProductPriceChanged"):
        build("catalog.ProductPriceChanged", {"sku": "MUG-1", "new_price": "-3"}, kind="event")

    bypassed = ProductPriceChanged.model_construct(sku="", old_price=Decimal("1"), new_price=Decimal("-1"))
    with pytest.raises(MessageRejectedError):
        publish(bypassed)

    assert not OutboxMessage.objects.exists()


def test_unknown_type_and_wrong_kind_are_refused():
    with pytest.raises(MessageRejectedError, match="Unknown event type 'catalog.Nope'"):
        build("catalog.Nope", {}, kind="event")
    with pytest.raises(MessageRejectedError, match="Unknown event type 'catalog.ReserveStock'"):
        build("catalog.ReserveStock", {"order_id": str(uuid.uuid4()), "lines": []}, kind="event")
    with pytest.raises(MessageRejectedError, match="send\\(\\) takes a Command"):
        send(ProductPriceChanged(sku="A", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1))


def test_oversized_payload_is_refused(settings):
    settings.BUS_MAX_PAYLOAD_BYTES = 100
    with pytest.raises(MessageRejectedError, match="over the limit of 100"):
        publish(ProductPriceChanged(sku="X" * 64, old_price=Decimal("1"), new_price=Decimal("2"), price_version=1))
    assert not OutboxMessage.objects.exists()


def test_a_rolled_back_transaction_publishes_nothing(catalog_product):
    with pytest.raises(RuntimeError), transaction.atomic():
        product_change_price(sku="MUG-1", new_price=Decimal("99.00"))
        raise RuntimeError("the caller fails after the service")

    assert not OutboxMessage.objects.exists()
    catalog_product.refresh_from_db()
    assert catalog_product.price == Decimal("10.00")


def test_messages_sent_while_handling_inherit_correlation_and_causation():
    cause = publish(ProductPriceChanged(sku="A", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1))

    with causation.handling(cause, "ordering"):
        effect = send(ReserveStock(order_id=uuid.uuid4(), lines=[{"sku": "A", "quantity": 1}]))

    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == cause.id
    assert effect.source == "ordering"


def test_a_command_sent_from_a_context_service_names_that_context_as_source(catalog_product):
    from apps.basket.services import basket_add_item, basket_checkout

    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_checkout(customer_id="c1")

    row = OutboxMessage.objects.get(message_type="ordering.PlaceOrder")
    assert row.envelope["source"] == "basket"
