"""Scheduled messages: a row kept in the outbox until due, claimed by the relay only then."""

import datetime
import uuid
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from apps.catalog.messages import ProductPriceChanged, ReleaseStock
from messaging.models import OutboxMessage
from messaging.outbox import MessageRejectedError
from tests.senders import publish, send
from messaging.relay import Relay

pytestmark = pytest.mark.django_db


def _price_changed(sku: str = "MUG-1") -> ProductPriceChanged:
    return ProductPriceChanged(sku=sku, old_price=Decimal("1.00"), new_price=Decimal("2.00"), price_version=1, currency="EUR")


def _in(seconds: float) -> datetime.datetime:
    return timezone.now() + datetime.timedelta(seconds=seconds)


def _claimed() -> list[uuid.UUID]:
    with transaction.atomic():
        return [row.message_id for row in Relay(batch_size=10).claim_batch()]


def test_send_and_publish_keep_a_scheduled_message_until_its_time():
    at = _in(3600)

    command = send(ReleaseStock(order_id=uuid.uuid4()), deliver_at=at)
    event = publish(_price_changed(), deliver_at=at)

    assert {row.message_id: row.available_at for row in OutboxMessage.objects.all()} == {command.id: at, event.id: at}


def test_a_naive_deliver_at_is_refused_and_nothing_is_written():
    with pytest.raises(MessageRejectedError, match="deliver_at must be a timezone-aware datetime"):
        send(ReleaseStock(order_id=uuid.uuid4()), deliver_at=datetime.datetime.now())

    assert not OutboxMessage.objects.exists()


def test_the_relay_claims_a_scheduled_row_only_once_it_is_due():
    now = publish(_price_changed("NOW")).id
    later = publish(_price_changed("LATER"), deliver_at=_in(3600)).id

    assert _claimed() == [now]

    # The hour passes.
    OutboxMessage.objects.filter(message_id=later).update(available_at=_in(-1))

    assert set(_claimed()) == {now, later}


def test_due_rows_go_out_in_the_order_they_became_due_not_the_order_they_were_written():
    fresh = publish(_price_changed("FRESH")).id
    overdue = publish(_price_changed("OVERDUE"), deliver_at=_in(-60)).id

    assert _claimed() == [overdue, fresh]


def test_the_relay_waits_no_longer_than_until_the_next_scheduled_row(settings):
    settings.BUS_RELAY_POLL_INTERVAL = 30.0
    relay = Relay()
    assert relay.seconds_to_wait() == 30.0

    publish(_price_changed(), deliver_at=_in(5))

    assert 0 < relay.seconds_to_wait() <= 5
