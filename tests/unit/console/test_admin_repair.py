"""Repairing dead letters from the admin: retry and discard one, a selection or a group,
each behind its own permission, each act in the row's repair history."""

import uuid
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from apps.catalog.messages import StockReserved
from apps.ordering.models import Order
from messaging.delivery import consume
from messaging.models import DeadLetter, OutboxMessage
from tests.senders import publish
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:messaging_deadletter_changelist"


def _stuck_order() -> tuple[uuid.UUID, DeadLetter]:
    """Ordering gave up on StockReserved for an order it did not have (yet)."""
    order_id = uuid.uuid4()
    envelope = publish(StockReserved(order_id=order_id)).to_json_dict()
    OutboxMessage.objects.update(published_at=timezone.now())
    consume(envelope, context="ordering", last_attempt=True)
    return order_id, DeadLetter.objects.get(message_id=envelope["id"])


def _staff(client, *permissions: str):
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    client.force_login(user)
    return client


def test_retrying_a_selection_sends_it_back_and_says_so(admin_client):
    _, letter = _stuck_order()

    response = admin_client.post(reverse(CHANGELIST), {"action": "retry_selected", "_selected_action": [letter.pk]},
                                 follow=True)

    assert "1 dead letter(s) sent back to the consumer that failed" in response.content.decode()
    assert OutboxMessage.objects.get(redeliver_to="ordering").message_id == letter.message_id
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.RETRIED
    assert letter.actions.get().actor == "admin" and letter.actions.get().user.username == "admin"


def test_the_detail_page_retries_and_its_history_shows_what_happened_next(admin_client):
    order_id, letter = _stuck_order()
    page = reverse("admin:messaging_deadletter_change", args=[letter.pk])
    assert 'action="' + reverse("admin:messaging_deadletter_retry", args=[letter.pk]) in admin_client.get(page).content.decode()

    admin_client.post(reverse("admin:messaging_deadletter_retry", args=[letter.pk]))
    Order.objects.create(id=order_id, customer_id="c", total=Decimal("1.00"))
    TestBus().run_until_quiet()

    history = admin_client.get(page).content.decode()
    assert "repair history" in history.lower()
    assert "handled by ordering:catalog.StockReserved" in history
    assert 'action="' + reverse("admin:messaging_deadletter_retry", args=[letter.pk]) not in history  # not open now


def test_a_retry_that_fails_again_links_the_new_dead_letter_from_the_history(admin_client):
    _, letter = _stuck_order()
    admin_client.post(reverse("admin:messaging_deadletter_retry", args=[letter.pk]))
    consume(OutboxMessage.objects.get(redeliver_to="ordering").envelope, context="ordering", last_attempt=True)
    again = DeadLetter.objects.exclude(pk=letter.pk).get()

    history = admin_client.get(reverse("admin:messaging_deadletter_change", args=[letter.pk])).content.decode()

    assert "dead again" in history
    assert reverse("admin:messaging_deadletter_change", args=[again.pk]) in history


def test_discarding_asks_why_then_archives_with_the_note(admin_client):
    _, letter = _stuck_order()
    selection = {"action": "discard_selected", "_selected_action": [letter.pk]}

    asked = admin_client.post(reverse(CHANGELIST), selection)
    assert asked.status_code == 200 and "Why do these need no repair?" in asked.content.decode()
    assert DeadLetter.objects.get().status == DeadLetter.Status.OPEN

    admin_client.post(reverse(CHANGELIST), {**selection, "confirmed": "yes", "note": "test order, never real"})

    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.DISCARDED
    assert letter.actions.get().note == "test order, never real"
    assert not OutboxMessage.objects.filter(redeliver_to__gt="").exists()


def test_the_list_shows_open_dead_letters_unless_asked_for_others(admin_client):
    _, discarded = _stuck_order()
    DeadLetter.objects.filter(pk=discarded.pk).update(status=DeadLetter.Status.DISCARDED)
    _, still_open = _stuck_order()

    default = admin_client.get(reverse(CHANGELIST)).content.decode()
    everything = admin_client.get(reverse(CHANGELIST) + "?status=all").content.decode()

    change = "admin:messaging_deadletter_change"
    assert reverse(change, args=[still_open.pk]) in default and reverse(change, args=[discarded.pk]) not in default
    assert reverse(change, args=[discarded.pk]) in everything


def test_failure_groups_count_and_a_group_is_retried_whole(admin_client):
    letters = [_stuck_order()[1] for _ in range(3)]

    page = admin_client.get(reverse("admin:messaging_deadletter_groups")).content.decode()
    assert "DoesNotExist" in page and "ordering:catalog.StockReserved" in page and ">3</a>" in page

    admin_client.post(reverse("admin:messaging_deadletter_groups"), {
        "action": "retry", "reason": "handler_failed", "exception_type": "DoesNotExist", "context": "ordering",
        "consumer": "ordering:catalog.StockReserved",
    })

    assert OutboxMessage.objects.filter(redeliver_to="ordering").count() == len(letters)
    assert not DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).exists()


def test_viewing_is_not_repairing(client):
    _, letter = _stuck_order()
    viewer = _staff(client, "view_deadletter")

    assert viewer.get(reverse("admin:messaging_deadletter_change", args=[letter.pk])).status_code == 200
    assert viewer.post(reverse("admin:messaging_deadletter_retry", args=[letter.pk])).status_code == 403
    assert viewer.post(reverse("admin:messaging_deadletter_discard", args=[letter.pk]),
                       {"note": "x"}).status_code == 403
    viewer.post(reverse(CHANGELIST), {"action": "retry_selected", "_selected_action": [letter.pk]})
    assert DeadLetter.objects.get().status == DeadLetter.Status.OPEN


def test_a_retry_permission_alone_retries_but_does_not_discard(client):
    _, letter = _stuck_order()
    operator = _staff(client, "view_deadletter", "retry_deadletter")

    assert operator.post(reverse("admin:messaging_deadletter_discard", args=[letter.pk]),
                         {"note": "x"}).status_code == 403
    operator.post(reverse("admin:messaging_deadletter_retry", args=[letter.pk]))
    assert DeadLetter.objects.get().status == DeadLetter.Status.RETRIED


def test_a_retry_is_never_made_by_a_get(admin_client):
    _, letter = _stuck_order()

    assert admin_client.get(reverse("admin:messaging_deadletter_retry", args=[letter.pk])).status_code == 403
    assert DeadLetter.objects.get().status == DeadLetter.Status.OPEN
