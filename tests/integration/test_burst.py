"""A burst of 10,000 outbox rows (fault 6 in full), with the relay killed
outright in the middle of it and RabbitMQ restarted: every message arrives,
and each subscriber applies each one once."""

import time
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import Count

from apps.catalog.messages import ProductPriceChanged
from apps.ordering.models import PriceListEntry
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from tests.senders import publish_many
from tests.integration.rabbitmq import broker_stopped
from tests.polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BURST = 10_000
#: Each event of the burst reaches two subscribers: basket and ordering.
SUBSCRIBERS = 2


def _published() -> int:
    return OutboxMessage.objects.filter(published_at__isnull=False).count()


def test_every_message_of_a_burst_arrives_once_through_a_killed_relay_and_a_broker_restart(bus):
    # Given 10,000 price changes committed at once,
    with transaction.atomic():
        envelopes = publish_many([
            ProductPriceChanged(sku=f"BURST-{i}", old_price=Decimal("1.00"), new_price=Decimal("2.00"),
                                price_version=1, currency="EUR")
            for i in range(BURST)
        ])
    # when the relay is killed outright a quarter of the way through publishing them,
    wait_for(lambda: _published() >= BURST // 4, timeout=60, interval=0.05, message="a quarter to be published")
    bus.kill("relay")
    bus.start("relay")
    # and RabbitMQ is restarted while the subscribers work through them,
    wait_for(lambda: InboxMessage.objects.count() >= BURST // 2, timeout=300, interval=1,
             message="a quarter of the deliveries to be handled")
    with broker_stopped():
        time.sleep(3)

    # then every message reaches every subscriber, and has its effect once.
    wait_for(lambda: InboxMessage.objects.count() >= SUBSCRIBERS * BURST, timeout=600, interval=2,
             message="every delivery to be handled")
    handled = InboxMessage.objects.values("message_id").annotate(consumers=Count("consumer", distinct=True),
                                                                rows=Count("id"))
    assert {(row["consumers"], row["rows"]) for row in handled} == {(SUBSCRIBERS, SUBSCRIBERS)}
    assert {row["message_id"] for row in handled} == {envelope.id for envelope in envelopes}
    assert PriceListEntry.objects.filter(sku__startswith="BURST-", price=Decimal("2.00")).count() == BURST
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()
    assert not DeadLetter.objects.exists()
    assert all(process.poll() is None for process in bus.values())
