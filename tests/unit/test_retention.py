"""Retention: old published outbox rows and inbox rows are purged in batches, on demand and by the relay."""

import datetime
import types
import uuid
from io import StringIO

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging import relay as relay_module
from messaging.checks import check_inbox_outlasts_redelivery
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.relay import Relay
from messaging.retention import longest_redelivery, purge_bus_tables
from tests.brokers import on_broker

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


def _outbox_row(*, published_days_ago: float | None, created_days_ago: float = 0) -> int:
    now = timezone.now()
    row = OutboxMessage.objects.create(
        message_id=uuid.uuid4(), kind="event", message_type="catalog.ProductPriceChanged",
        correlation_id=uuid.uuid4(), envelope={},
        published_at=None if published_days_ago is None else now - published_days_ago * DAY,
    )
    # created_at is auto_now_add: set it afterwards.
    OutboxMessage.objects.filter(id=row.id).update(created_at=now - created_days_ago * DAY)
    return row.id


def _inbox_row(*, handled_days_ago: float) -> int:
    row = InboxMessage.objects.create(message_id=uuid.uuid4(), consumer="basket:catalog.ProductPriceChanged",
                                      message_type="catalog.ProductPriceChanged")
    InboxMessage.objects.filter(id=row.id).update(handled_at=timezone.now() - handled_days_ago * DAY)
    return row.id


@pytest.fixture
def retention(settings):
    settings.BUS_OUTBOX_RETENTION = 7 * DAY
    settings.BUS_INBOX_RETENTION = 30 * DAY
    return settings


def test_the_purge_deletes_old_rows_and_keeps_recent_and_unpublished_ones(retention):
    old_published = _outbox_row(published_days_ago=8, created_days_ago=8)
    recent_published = _outbox_row(published_days_ago=1, created_days_ago=20)
    old_unpublished = _outbox_row(published_days_ago=None, created_days_ago=60)
    old_handled, recent_handled = _inbox_row(handled_days_ago=31), _inbox_row(handled_days_ago=29)
    dead_letter = DeadLetter.objects.create(context="basket", reason=DeadLetter.Reason.UNKNOWN_TYPE, error="x", body={})
    DeadLetter.objects.filter(pk=dead_letter.pk).update(created_at=timezone.now() - 365 * DAY)

    assert purge_bus_tables() == {"outbox": 1, "inbox": 1}

    assert set(OutboxMessage.objects.values_list("id", flat=True)) == {recent_published, old_unpublished}
    assert set(InboxMessage.objects.values_list("id", flat=True)) == {recent_handled}
    assert not OutboxMessage.objects.filter(id=old_published).exists()
    assert not InboxMessage.objects.filter(id=old_handled).exists()
    assert DeadLetter.objects.filter(pk=dead_letter.pk).exists()  # people act on those


def test_the_purge_deletes_a_bounded_batch_per_statement(retention):
    for _ in range(5):
        _inbox_row(handled_days_ago=40)

    with CaptureQueriesContext(connection) as queries:
        deleted = purge_bus_tables(batch_size=2)

    assert deleted == {"outbox": 0, "inbox": 5}
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1
    assert not InboxMessage.objects.exists()


def test_purge_bus_tables_dry_run_counts_and_deletes_nothing(retention):
    _outbox_row(published_days_ago=10)
    _inbox_row(handled_days_ago=40)
    out = StringIO()

    call_command("purge_bus_tables", "--dry-run", stdout=out)

    assert "outbox: would delete 1 rows published more than 7 days, 0:00:00 ago (BUS_OUTBOX_RETENTION)" in out.getvalue()
    assert "inbox: would delete 1 rows handled more than 30 days, 0:00:00 ago (BUS_INBOX_RETENTION)" in out.getvalue()
    assert (OutboxMessage.objects.count(), InboxMessage.objects.count()) == (1, 1)


def test_purge_bus_tables_deletes_and_reports(retention):
    _outbox_row(published_days_ago=10)
    _inbox_row(handled_days_ago=40)
    out = StringIO()

    call_command("purge_bus_tables", "--batch-size", "1", stdout=out)

    assert "outbox: deleted 1 rows" in out.getvalue() and "inbox: deleted 1 rows" in out.getvalue()
    assert not OutboxMessage.objects.exists() and not InboxMessage.objects.exists()


def test_purge_bus_tables_refuses_an_empty_batch():
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        call_command("purge_bus_tables", "--batch-size", "0")


def test_the_relay_purges_at_once_then_once_per_interval_and_a_backlog_batch_by_batch(retention, monkeypatch):
    retention.BUS_PURGE_INTERVAL = datetime.timedelta(minutes=10)
    retention.BUS_PURGE_BATCH_SIZE = 2
    clock = types.SimpleNamespace(monotonic=lambda: clock.now, now=1000.0)
    monkeypatch.setattr(relay_module, "time", clock)
    relay = Relay()
    for _ in range(3):
        _inbox_row(handled_days_ago=40)

    # A full batch: more to purge, so the next round goes on with it.
    assert relay.purge_when_due() is True
    assert InboxMessage.objects.count() == 1
    assert relay.purge_when_due() is False
    assert not InboxMessage.objects.exists()

    _inbox_row(handled_days_ago=40)
    clock.now += 599
    assert relay.purge_when_due() is False
    assert InboxMessage.objects.count() == 1  # not yet: the interval has not passed

    clock.now += 1
    relay.purge_when_due()
    assert not InboxMessage.objects.exists()


def test_the_relay_purges_between_its_rounds(retention, monkeypatch):
    retention.BUS_RELAY_POLL_INTERVAL = 0.01
    _inbox_row(handled_days_ago=40)
    relay = Relay()
    monkeypatch.setattr(relay, "collect_dead_letters", lambda: 0)  # no broker in this test
    rounds = iter(range(3))

    relay.run(stop=lambda: next(rounds, None) is None)

    assert not InboxMessage.objects.exists()


def test_the_system_check_passes_when_the_inbox_outlasts_the_longest_redelivery(settings):
    settings.BUS_INBOX_RETENTION = longest_redelivery()

    assert check_inbox_outlasts_redelivery(None) == []


def test_the_system_check_fails_when_the_inbox_forgets_before_a_message_can_come_back(settings):
    settings.BUS_DEAD_LETTER_REPLAY_WINDOW = 14 * DAY
    settings.BUS_INBOX_RETENTION = 7 * DAY

    errors = check_inbox_outlasts_redelivery(None)

    assert [error.id for error in errors] == ["messaging.E010"]
    assert isinstance(errors[0], checks.Error)
    assert "BUS_INBOX_RETENTION (7 days, 0:00:00) is shorter than the longest redelivery" in errors[0].msg
    assert "messaging.E010" in {message.id for message in checks.run_checks()}


def test_the_longest_redelivery_adds_retries_deliveries_and_the_replay_window(settings):
    settings.BUS_MAX_RETRIES, settings.BUS_DELIVERY_LIMIT, settings.CELERY_TASK_TIME_LIMIT = 2, 1, 10
    settings.BUS_RETRY_BACKOFF, settings.BUS_RETRY_BACKOFF_MAX = 1.0, 1.5
    settings.BUS_DEAD_LETTER_REPLAY_WINDOW = DAY

    # 3 attempts x 2 deliveries x 10 s, retry waits of at most 1 s and 1.5 s, then the window.
    assert longest_redelivery() == datetime.timedelta(seconds=60 + 2.5) + DAY


def test_on_redis_each_redelivery_may_wait_a_visibility_timeout(settings):
    on_broker(settings, "redis")
    settings.BUS_MAX_RETRIES, settings.BUS_DELIVERY_LIMIT, settings.CELERY_TASK_TIME_LIMIT = 2, 1, 10
    settings.BUS_RETRY_BACKOFF, settings.BUS_RETRY_BACKOFF_MAX = 1.0, 1.5
    settings.BUS_DEAD_LETTER_REPLAY_WINDOW, settings.BUS_REDIS_VISIBILITY_TIMEOUT = DAY, 100

    # 3 attempts x 2 deliveries, each given back a visibility timeout after it was taken.
    assert longest_redelivery() == datetime.timedelta(seconds=600 + 2.5) + DAY
