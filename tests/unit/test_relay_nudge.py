"""The relay's nudge: one NOTIFY per committed transaction that wrote messages, none for one
rolled back, through Django's public on-commit API (on PostgreSQL: tests/integration/test_relay.py)."""

import pytest
from django.db import connection, transaction

from messaging import outbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def notifies(monkeypatch):
    """The NOTIFYs sent, as if on PostgreSQL."""
    sent = []
    monkeypatch.setattr(connection, "vendor", "postgresql")
    monkeypatch.setattr(outbox, "_notify_relays", lambda: sent.append(outbox.RELAY_CHANNEL))
    return sent


def test_a_transaction_writing_many_messages_nudges_once_after_it_commits(notifies,
                                                                          django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            for _ in range(3):
                outbox.nudge_relay()
            assert notifies == [], "nothing before the commit"

    assert notifies == [outbox.RELAY_CHANNEL]


def test_a_rolled_back_savepoint_takes_its_nudge_with_it_and_a_later_write_nudges_again(
        notifies, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            with pytest.raises(RuntimeError), transaction.atomic():
                outbox.nudge_relay()
                raise RuntimeError("the write is undone")
    assert notifies == []

    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            with pytest.raises(RuntimeError), transaction.atomic():
                outbox.nudge_relay()
                raise RuntimeError("the write is undone")
            outbox.nudge_relay()
    assert notifies == [outbox.RELAY_CHANNEL]


def test_a_rolled_back_transaction_nudges_nothing_and_the_next_one_nudges_once(notifies,
                                                                              django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as rolled_back:
        with pytest.raises(RuntimeError), transaction.atomic():
            outbox.nudge_relay()
            raise RuntimeError("rolled back")
    assert rolled_back == [] and notifies == []

    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            outbox.nudge_relay()
            outbox.nudge_relay()
    assert notifies == [outbox.RELAY_CHANNEL]


def test_each_committed_transaction_nudges_once(notifies, django_capture_on_commit_callbacks):
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            with transaction.atomic():
                outbox.nudge_relay()
                outbox.nudge_relay()

    assert notifies == [outbox.RELAY_CHANNEL] * 2


@pytest.mark.django_db(transaction=True)  # set_autocommit is refused inside the test's own atomic block
def test_in_manual_transaction_management_the_nudge_goes_inside_the_transaction(notifies):
    # on_commit() refuses this mode; PostgreSQL holds a NOTIFY until COMMIT and drops it on rollback.
    transaction.set_autocommit(False)
    try:
        outbox.nudge_relay()
        assert notifies == [outbox.RELAY_CHANNEL]
    finally:
        transaction.rollback()
        transaction.set_autocommit(True)


def test_a_notify_failing_after_the_commit_is_logged_and_never_raised(monkeypatch, caplog,
                                                                     django_capture_on_commit_callbacks):
    def refused():
        raise ConnectionError("the database went away after the commit")

    monkeypatch.setattr(connection, "vendor", "postgresql")
    monkeypatch.setattr(outbox, "_notify_relays", refused)

    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            outbox.nudge_relay()

    assert "the database went away after the commit" in caplog.text


def test_no_private_transaction_api_is_read():
    import inspect

    assert "run_on_commit" not in inspect.getsource(outbox)
