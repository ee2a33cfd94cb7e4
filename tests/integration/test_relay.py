"""The relay on PostgreSQL and RabbitMQ: nudged at commit, polling as a safety
net, and safe to run as several instances."""

import contextlib
import datetime
import signal
import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.catalog.messages import ProductPriceChanged
from messaging.models import OutboxMessage
from tests.senders import publish
from messaging.relay import Relay
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def _price_changed(sku: str) -> ProductPriceChanged:
    return ProductPriceChanged(sku=sku, old_price=Decimal("1.00"), new_price=Decimal("2.00"), price_version=1, currency="EUR")


def _is_published(message_id) -> bool:
    return OutboxMessage.objects.filter(message_id=message_id, published_at__isnull=False).exists()


@contextlib.contextmanager
def _relay_process_paused(bus):
    """Freeze the platform's relay so only the relays a test runs touch the outbox."""
    relay = bus["relay"]
    relay.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        relay.send_signal(signal.SIGCONT)


def _in_thread(target, *args) -> threading.Thread:
    def run():
        try:
            target(*args)
        finally:
            connection.close()  # each thread has its own connection

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_committed_message_is_published_at_once_by_the_nudge(bus):
    # The relay process polls only every 30 s: quick publication is the nudge's doing.
    with transaction.atomic():
        envelope = publish(_price_changed("NUDGE-1"))

    wait_for(lambda: _is_published(envelope.id), timeout=10, message="the nudged row to be published")


def test_a_scheduled_row_is_published_once_due_though_the_relay_polls_only_every_30_s(bus):
    deliver_at = timezone.now() + datetime.timedelta(seconds=3)
    with transaction.atomic():
        envelope = publish(_price_changed("LATER-1"), deliver_at=deliver_at)

    assert not _is_published(envelope.id)
    # Well before the next poll: the relay's wait ended when the row fell due.
    wait_for(lambda: _is_published(envelope.id), timeout=15, message="the scheduled row to be published")
    assert OutboxMessage.objects.get(message_id=envelope.id).published_at >= deliver_at


def test_a_row_whose_nudge_was_lost_is_published_by_the_poll(bus, settings, monkeypatch):
    settings.BUS_RELAY_POLL_INTERVAL = 0.2
    stop = threading.Event()
    with _relay_process_paused(bus):
        # Given a relay that has drained the outbox (the first row is its own doing)
        # and is now waiting for a nudge or its poll,
        first = publish(_price_changed("POLL-0"))
        relay = _in_thread(lambda: Relay().run(stop=stop.is_set))
        try:
            wait_for(lambda: _is_published(first.id), timeout=10, message="the relay's first drain")
            # when a row is committed without its nudge (the web process died in between),
            monkeypatch.setattr("messaging.outbox.nudge_relay", lambda: None)
            envelope = publish(_price_changed("POLL-1"))
            # then only the poll can find it, and it does.
            wait_for(lambda: _is_published(envelope.id), timeout=10, message="the polling relay to publish the row")
        finally:
            stop.set()
            relay.join(timeout=10)


def test_relays_skip_rows_another_relay_holds_instead_of_waiting(bus):
    with _relay_process_paused(bus):
        with transaction.atomic():
            ids = [publish(_price_changed(f"LOCK-{i}")).id for i in range(4)]
        holding, release, held = threading.Event(), threading.Event(), []

        def hold_first_two():
            with transaction.atomic():
                held.extend(row.message_id for row in Relay(batch_size=2).claim_batch())
                holding.set()
                release.wait(timeout=30)

        holder = _in_thread(hold_first_two)
        holding.wait(timeout=10)
        try:
            with transaction.atomic():
                claimed = [row.message_id for row in Relay(batch_size=10).claim_batch()]
        finally:
            release.set()
            holder.join(timeout=10)

    assert held == ids[:2]
    assert claimed == ids[2:]


def test_two_relays_publish_every_row_exactly_once(bus):
    with _relay_process_paused(bus):
        with transaction.atomic():
            ids = [publish(_price_changed(f"MANY-{i}")).id for i in range(150)]
        counts: list[int] = []

        def drain():
            relay = Relay(batch_size=10)
            while (published := relay.publish_batch()) > 0:
                counts.append(published)
            relay.close()

        threads = [_in_thread(drain), _in_thread(drain)]
        for thread in threads:
            thread.join(timeout=60)

    assert sum(counts) == len(ids)
    assert OutboxMessage.objects.filter(message_id__in=ids, published_at__isnull=False).count() == len(ids)
