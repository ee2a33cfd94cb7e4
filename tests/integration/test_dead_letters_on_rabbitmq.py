"""A retry on RabbitMQ waits in a retry queue of its delay (``retry.<context>.<ms>ms``): one
that has no such queue to wait in is returned by RabbitMQ and ends up as a dead
letter in the admin's table, never lost. (What every broker dead-letters, and how,
is in the broker contract: ``broker_contract.py``.)"""

import uuid

import pytest
from celery import current_app
from django.db import transaction

from apps.catalog.messages import StockReserved
from messaging import brokers
from messaging.brokers.base import DEAD_LETTER_QUEUE
from messaging.models import DeadLetter
from messaging.outbox import nudge_relay
from messaging.topology import Topology
from tests.integration.on_the_broker import queue_depth
from tests.polling import wait_for
from tests.senders import publish

pytestmark = pytest.mark.integration


def test_a_retry_with_no_queue_to_wait_in_becomes_a_dead_letter_not_a_loss(bus, settings):
    # The holding queue of the workers' first retry is gone: RabbitMQ returns the retry.
    settings.BUS_RETRY_BACKOFF = float(bus.env["BUS_RETRY_BACKOFF"])
    settings.BUS_RETRY_BACKOFF_MAX = float(bus.env["BUS_RETRY_BACKOFF_MAX"])
    first_wait = next(q for q in Topology().queues() if q.name.startswith("retry.ordering."))
    with current_app.connection_for_write() as connection:
        first_wait(connection.default_channel).delete()
    try:
        with transaction.atomic():
            # Ordering has no such order: its handler fails, and the message is retried.
            envelope = publish(StockReserved(order_id=uuid.uuid4()))
        wait_for(lambda: queue_depth(brokers.current(), DEAD_LETTER_QUEUE) == 1,
                 message="the worker to reject the message it could not retry")
        with transaction.atomic():
            nudge_relay()  # the relay collects dead letters after each round of publishing
        letter = wait_for(lambda: DeadLetter.objects.filter(message_id=envelope.id).first(),
                          message="the relay to collect the rejected message")
    finally:
        with current_app.connection_for_write() as connection:
            Topology().declare(connection.default_channel)

    assert (letter.reason, letter.context) == (DeadLetter.Reason.BROKER, "ordering")
    assert "ordering.events.catalog.StockReserved (rejected)" in letter.error
    assert letter.body["id"] == str(envelope.id)
