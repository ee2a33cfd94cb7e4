"""The conversation page in the admin, who may see it, and the links to it from every row."""

import uuid
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django_celery_results.models import TaskResult

from apps.basket.models import Basket
from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.models import StockReservation
from apps.payment.models import Payment
from console.conversation_admin import conversation_url
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.task_message import delivery_id
from messaging.testing import TestBus
from tests.unit.console.test_conversation import checkout, payment_gives_up

pytestmark = pytest.mark.django_db

MESSAGE_VIEW_PERMISSIONS = ["view_outboxmessage", "view_inboxmessage", "view_deadletter"]


def staff(*codenames: str) -> User:
    user = User.objects.create_user("operator", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def failed_checkout(catalog_product):
    """A checkout whose payment was dead-lettered; its deadline still scheduled."""
    order_id = checkout(withholding=("payment.ProcessPayment",))
    payment_gives_up(order_id)
    return order_id


def test_the_page_shows_each_step_in_order_a_dead_letter_with_its_reason_and_what_is_pending(
        admin_client, failed_checkout):
    response = admin_client.get(conversation_url(failed_checkout))

    page = response.content.decode()
    assert response.status_code == 200
    assert response.templates[0].name == "admin/messaging/conversation.html"
    steps = ["ordering.PlaceOrder", "ordering.ExpireOrder", "ordering.OrderStarted", "catalog.ReserveStock",
             "catalog.StockReserved", "payment.ProcessPayment"]
    timeline = page[page.index('<table id="timeline">'):]
    assert [timeline.index(f"<strong>{name}</strong>") for name in steps] == sorted(
        timeline.index(f"<strong>{name}</strong>") for name in steps)
    assert "Handler failed after all retries" in timeline and "RuntimeError: card processor down" in timeline
    assert reverse("admin:messaging_deadletter_change", args=[DeadLetter.objects.get().id]) in timeline
    assert '<span class="state state-scheduled">scheduled</span>' in timeline
    assert '<span class="state state-pending">pending</span>' in timeline
    assert "1 failed" in page and "1 still to happen" in page


def test_the_sequence_diagram_has_a_lane_per_context_and_marks_the_failure_red(admin_client, failed_checkout):
    response = admin_client.get(conversation_url(failed_checkout))

    svg = response.context["diagram"]
    assert svg.startswith("<svg") and svg in response.content.decode()
    for lane in ("basket", "ordering", "catalog", "payment"):
        assert f">{lane}</text>" in svg
    assert svg.count("<line x1=") - 4 == 6  # four lifelines, one arrow per delivery
    failure = arrow(svg, "#6 payment.ProcessPayment")
    assert "url(#arrow-dead-lettered)" in failure and 'stroke="#ba2121"' in failure
    assert "dead-lettered after 6 attempts" in failure
    assert 'stroke-dasharray="5 4"' in arrow(svg, "#2 ordering.ExpireOrder")
    assert "stroke-dasharray" not in arrow(svg, "#1 ordering.PlaceOrder")


def arrow(svg: str, label: str) -> str:
    """The markup of the arrow whose label starts with ``label``: a link around a line and its text."""
    start = svg.index(f"<title>{label}")
    return svg[start:svg.index("</a>", start)]


def test_the_order_links_to_its_conversation_from_its_list_and_its_page(admin_client, catalog_product):
    order_id = checkout()

    listing = admin_client.get(reverse("admin:ordering_order_changelist"))
    detail = admin_client.get(reverse("admin:ordering_order_change", args=[order_id]))
    followed = admin_client.get(conversation_url(order_id))

    for page in (listing, detail):
        assert f'href="{conversation_url(order_id)}"' in page.content.decode()
    assert [step.message_type for step in followed.context["conversation"].steps][:2] == [
        "ordering.PlaceOrder", "ordering.ExpireOrder"]


@pytest.mark.parametrize("admin_name, row", [
    ("basket_basket", lambda order_id: Basket.objects.get(pending_order_id=order_id)),
    ("payment_payment", lambda order_id: Payment.objects.get(order_id=order_id)),
    ("catalog_stockreservation", lambda order_id: StockReservation.objects.get(order_id=order_id)),
])
def test_the_rows_other_contexts_keep_for_an_order_link_to_its_conversation(admin_client, catalog_product,
                                                                          admin_name, row):
    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    order_id = basket_checkout(customer_id="c1")
    # The basket holds the order only while it waits for ordering: look at it then.
    TestBus().run_until_quiet(withholding=() if admin_name != "basket_basket" else ("ordering.OrderStarted",))

    detail = admin_client.get(reverse(f"admin:{admin_name}_change", args=[row(order_id).pk]))

    assert f'href="{conversation_url(order_id)}"' in detail.content.decode()


@pytest.mark.parametrize("model", [OutboxMessage, InboxMessage, DeadLetter])
def test_every_message_row_links_to_its_conversation(admin_client, failed_checkout, model):
    opts = model._meta
    row = model.objects.filter(correlation_id=failed_checkout).first()

    listing = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    detail = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[row.pk]))

    for page in (listing, detail):
        assert f'href="{conversation_url(failed_checkout)}"' in page.content.decode()


def test_a_task_result_links_through_its_message_to_the_conversation(admin_client, failed_checkout):
    row = OutboxMessage.objects.get(message_type="catalog.ReserveStock")
    result = TaskResult.objects.create(
        task_id=delivery_id(row.message_id, "catalog"), task_name=row.message_type, status="SUCCESS",
        worker="catalog@host", task_kwargs=f"{{'envelope': <{row.message_type} id={row.message_id}>}}")

    detail = admin_client.get(reverse("admin:django_celery_results_taskresult_change", args=[result.pk]))
    followed = admin_client.get(conversation_url(row.message_id))

    assert f'href="{conversation_url(row.message_id)}"' in detail.content.decode()
    assert followed.status_code == 302
    assert followed["Location"] == f"{conversation_url(failed_checkout)}#message-{row.message_id}"
    conversation = admin_client.get(followed["Location"])
    assert "catalog@host" in conversation.content.decode()


def test_the_outbox_lists_sender_cause_and_conversation_and_filters_by_them(admin_client, failed_checkout):
    url = reverse("admin:messaging_outboxmessage_changelist")
    place_order = OutboxMessage.objects.get(message_type="ordering.PlaceOrder")
    other_conversation = OutboxMessage.objects.create(
        message_id=uuid.uuid4(), kind="event", message_type="catalog.ProductPriceChanged",
        correlation_id=uuid.uuid4(), source="catalog", envelope={})

    listing = admin_client.get(url)
    from_ordering = admin_client.get(url, {"source": "ordering"})
    in_conversation = admin_client.get(url, {"correlation_id": str(failed_checkout)})
    caused_by_place_order = admin_client.get(url, {"causation_id": str(place_order.message_id)})
    first_of_their_conversation = admin_client.get(url, {"causation_id": "none"})

    def types(response):
        return sorted(row.message_type for row in response.context["cl"].result_list)

    page = listing.content.decode()
    assert all(f"column-{column}" in page for column in ("source", "cause_link", "conversation_link"))
    assert f'href="{conversation_url(failed_checkout)}#message-{place_order.message_id}"' in page
    assert types(from_ordering) == ["catalog.ReserveStock", "ordering.OrderStarted", "payment.ProcessPayment"]
    assert other_conversation.message_type not in types(in_conversation) and len(types(in_conversation)) == 6
    assert types(caused_by_place_order) == ["catalog.ReserveStock", "ordering.OrderStarted"]
    assert types(first_of_their_conversation) == [
        "catalog.ProductPriceChanged", "ordering.ExpireOrder", "ordering.PlaceOrder"]
    assert "By conversation" in in_conversation.content.decode()


@pytest.mark.parametrize("model", [InboxMessage, DeadLetter])
def test_inbox_and_dead_letters_filter_by_conversation(admin_client, failed_checkout, model):
    opts = model._meta
    DeadLetter.objects.create(context="basket", reason=DeadLetter.Reason.UNKNOWN_TYPE, error="x", body={},
                              correlation_id=uuid.uuid4())
    InboxMessage.objects.create(message_id=uuid.uuid4(), consumer="x.y", message_type="a.B", correlation_id=uuid.uuid4())

    response = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
                                {"correlation_id": str(failed_checkout)})

    rows = list(response.context["cl"].result_list)
    assert rows and {row.correlation_id for row in rows} == {failed_checkout}
    assert model.objects.exclude(correlation_id=failed_checkout).exists()
    # The filter shows in the sidebar, where it can be cleared.
    assert "By conversation" in response.content.decode() and str(failed_checkout)[:8] in response.content.decode()


def test_the_form_opens_a_conversation_by_id_and_refuses_what_is_not_one(admin_client, failed_checkout):
    url = reverse("admin:messaging_conversation_open")

    opened = admin_client.get(url, {"id": str(failed_checkout)})
    refused = admin_client.get(url, {"id": "order 12"})
    blank = admin_client.get(url)

    assert opened.status_code == 302 and opened["Location"] == conversation_url(failed_checkout)
    assert refused.status_code == 200 and "Enter a valid UUID." in refused.content.decode()
    assert blank.status_code == 200 and 'name="id"' in blank.content.decode()


def test_an_id_without_messages_says_so(admin_client):
    response = admin_client.get(conversation_url(uuid.uuid4()))

    assert response.status_code == 200
    assert "No message of this conversation is recorded" in response.content.decode()


def test_anonymous_users_are_sent_to_log_in(client, failed_checkout):
    response = client.get(conversation_url(failed_checkout))

    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("codenames", [[], ["view_outboxmessage"], ["view_outboxmessage", "view_inboxmessage"]])
def test_staff_who_may_not_view_every_message_table_are_refused(client, failed_checkout, codenames):
    client.force_login(staff(*codenames))

    assert client.get(conversation_url(failed_checkout)).status_code == 403
    assert client.get(reverse("admin:messaging_conversation_open")).status_code == 403


def test_staff_who_may_view_the_message_tables_see_it_without_task_results_unless_they_may_view_those(
        client, failed_checkout):
    row = OutboxMessage.objects.get(message_type="ordering.PlaceOrder")
    TaskResult.objects.create(task_id=delivery_id(row.message_id, "ordering"), status="SUCCESS", worker="ordering@h")
    user = staff(*MESSAGE_VIEW_PERMISSIONS)
    client.force_login(user)

    without = client.get(conversation_url(failed_checkout))
    user.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    with_results = client.get(conversation_url(failed_checkout))

    assert without.status_code == 200 and "ordering@h" not in without.content.decode()
    assert "ordering@h" in with_results.content.decode()
