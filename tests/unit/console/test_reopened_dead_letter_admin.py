"""A discarded dead letter in the admin: retry is refused with why; Reopen, with a note, opens it again."""


import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.urls import reverse

from messaging import repair
from messaging.models import DeadLetter, DeadLetterAction, OutboxMessage

pytestmark = pytest.mark.django_db


@pytest.fixture
def discarded(payment_dead_letter):
    """A payment dead-lettered by a provider outage, then discarded by an operator."""
    assert repair.discard([payment_dead_letter], actor="bob", note="paid by phone").done
    return payment_dead_letter


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_retry_button_of_a_discarded_dead_letter_is_refused_with_why(admin_client, discarded):
    response = admin_client.post(reverse("admin:messaging_deadletter_retry", args=[discarded.pk]), follow=True)

    assert any("not done, it is discarded already: reopen it first" in m for m in _messages(response))
    assert DeadLetter.objects.get().status == DeadLetter.Status.DISCARDED
    assert not OutboxMessage.objects.filter(redeliver_to__gt="").exists()


def test_a_discarded_dead_letters_page_offers_reopen_and_no_retry(admin_client, discarded):
    page = admin_client.get(reverse("admin:messaging_deadletter_change", args=[discarded.pk])).content.decode()

    assert reverse("admin:messaging_deadletter_reopen", args=[discarded.pk]) in page
    assert reverse("admin:messaging_deadletter_retry", args=[discarded.pk]) not in page


def test_reopen_asks_why_then_opens_it_again_under_the_users_name(admin_client, admin_user, discarded):
    url = reverse("admin:messaging_deadletter_reopen", args=[discarded.pk])

    asked = admin_client.post(url)
    assert "Why do these need repair after all?" in asked.content.decode()
    assert DeadLetter.objects.get().status == DeadLetter.Status.DISCARDED

    response = admin_client.post(url, {"confirmed": "yes", "note": "the phone payment never happened"}, follow=True)

    assert any("1 dead letter(s) reopened." in m for m in _messages(response))
    assert DeadLetter.objects.get().status == DeadLetter.Status.OPEN
    action = discarded.actions.last()
    assert (action.action, action.user, action.note) == (
        DeadLetterAction.Action.REOPENED, admin_user, "the phone payment never happened")


def test_the_reopen_action_on_a_selection_needs_a_note_and_reopens_only_discarded_ones(admin_client, discarded):
    changelist = reverse("admin:messaging_deadletter_changelist")
    selection = {"action": "reopen_selected", ACTION_CHECKBOX_NAME: [str(discarded.pk)]}

    without_note = admin_client.post(f"{changelist}?status=all", {**selection, "confirmed": "yes"})
    assert "A note saying why is needed." in without_note.content.decode()

    response = admin_client.post(f"{changelist}?status=all", {**selection, "confirmed": "yes", "note": "needed"},
                                 follow=True)
    assert DeadLetter.objects.get().status == DeadLetter.Status.OPEN
    again = admin_client.post(f"{changelist}?status=all", {**selection, "confirmed": "yes", "note": "again"},
                              follow=True)
    assert any("only a discarded dead letter is reopened" in m for m in _messages(again))
    assert response.status_code == 200


def test_reopening_needs_the_discard_permission(client, django_user_model, discarded):
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(viewer)

    response = client.post(reverse("admin:messaging_deadletter_reopen", args=[discarded.pk]),
                           {"confirmed": "yes", "note": "x"})

    assert response.status_code == 403
    assert DeadLetter.objects.get().status == DeadLetter.Status.DISCARDED
