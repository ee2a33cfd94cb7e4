"""The inbox under concurrency on PostgreSQL: two copies of one message at
once apply it once; the loser's insert waits for the winner, then gives way."""

import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection

from apps.catalog.messages import ProductPriceChanged
from messaging.contracts import Envelope
from messaging.inbox import handle_once
from messaging.models import InboxMessage
from messaging.registry import Handler

pytestmark = pytest.mark.integration


def test_concurrent_copies_of_one_message_apply_it_once(transactional_db, real_services):
    message = ProductPriceChanged(sku="C-1", old_price=Decimal("1.00"), new_price=Decimal("2.00"), price_version=1, currency="EUR")
    envelope = Envelope(id=uuid.uuid4(), type="catalog.ProductPriceChanged", kind="event", version=1,
                        source="catalog", time="2026-01-01T00:00:00Z", correlationid=uuid.uuid4(),
                        data=message.model_dump(mode="json"))
    effects, first_inside, let_first_commit = [], threading.Event(), threading.Event()

    def slow_effect(_message):
        effects.append(threading.current_thread().name)
        first_inside.set()
        let_first_commit.wait(timeout=30)

    handler = Handler(func=slow_effect, kind="event", target="catalog.ProductPriceChanged")
    results = {}

    def deliver(name):
        try:
            results[name] = handle_once(envelope, message, handler)
        finally:
            connection.close()

    first = threading.Thread(target=deliver, args=("first",), name="first")
    first.start()
    first_inside.wait(timeout=10)
    second = threading.Thread(target=deliver, args=("second",), name="second")
    second.start()
    second.join(timeout=2)
    assert second.is_alive(), "the second copy should wait on the first one's inbox row"

    let_first_commit.set()
    first.join(timeout=10)
    second.join(timeout=10)

    assert results == {"first": True, "second": False}
    assert effects == ["first"]
    assert InboxMessage.objects.filter(message_id=envelope.id).count() == 1
