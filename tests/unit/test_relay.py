"""The relay's bookkeeping: marked only once confirmed, in order, errors recorded."""

from decimal import Decimal

import pytest

from apps.catalog.messages import ProductPriceChanged
from messaging.models import OutboxMessage
from messaging.outbox import publish
from messaging.relay import Relay

pytestmark = pytest.mark.django_db


class FlakyProducer:
    """Confirms every publish except those whose number is in ``refuse``."""

    def __init__(self, refuse=()):
        self.refuse, self.sent, self.calls = set(refuse), [], 0

    def publish(self, body, **options):
        self.calls += 1
        if self.calls in self.refuse:
            raise TimeoutError("no confirm within 10s")
        self.sent.append(body[1]["envelope"]["id"])


@pytest.fixture
def three_rows():
    return [
        str(publish(ProductPriceChanged(sku=f"SKU-{i}", old_price=Decimal("1"), new_price=Decimal("2"), price_version=1)).id)
        for i in range(3)
    ]


def _relay_with(producer: FlakyProducer, monkeypatch) -> Relay:
    relay = Relay(batch_size=10)
    monkeypatch.setattr(relay, "_producer_ready", lambda: producer)
    monkeypatch.setattr(relay, "close", lambda broken=False: None)
    return relay


def test_rows_are_published_in_order_and_marked(three_rows, monkeypatch):
    producer = FlakyProducer()

    assert _relay_with(producer, monkeypatch).publish_batch() == 3

    assert producer.sent == three_rows
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def test_an_unconfirmed_row_stays_unpublished_with_its_error_and_later_rows_wait(three_rows, monkeypatch):
    with pytest.raises(TimeoutError):
        _relay_with(FlakyProducer(refuse={2}), monkeypatch).publish_batch()

    rows = list(OutboxMessage.objects.order_by("id"))
    assert rows[0].published_at is not None  # confirmed before the failure: kept
    assert rows[1].published_at is None and rows[1].attempts == 1
    assert rows[1].last_error == "TimeoutError: no confirm within 10s"
    assert rows[2].published_at is None and rows[2].attempts == 0

    retry = FlakyProducer()
    assert _relay_with(retry, monkeypatch).publish_batch() == 2
    assert retry.sent == three_rows[1:]
