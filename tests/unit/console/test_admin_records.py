"""Records in the admin read as people read them: JSON indented and highlighted,
tracebacks as written, times to the second, ids short in lists, task results read-only."""

import html
import json
import re
import uuid
from datetime import UTC, datetime

import pytest
from django.urls import reverse
from django.utils.html import strip_tags
from django_celery_results.models import TaskResult

from messaging.dead_letters import dead_letter_record
from messaging.models import DeadLetter, InboxMessage, OutboxMessage

#: A time with seconds, so a format without them shows.
AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
AT_TEXT = "2025-03-04 05:06:07"
TRACEBACK = 'Traceback (most recent call last):\n  File "handlers.py", line 3, in place_order\n    raise ValueError("boom")\nValueError: boom\n'


def _readonly_field(page: str, css_class: str) -> str:
    """The read-only value in the form row ``field-<name>`` of a detail page, as HTML."""
    row = page.split(f'class="form-row field-{css_class}', 1)[1]
    return row.split('<div class="readonly">', 1)[1].split("</div>", 1)[0]


def _code_block_text(value_html: str) -> str:
    """The text of the one ``<pre>`` block in ``value_html``, as a reader sees it."""
    block = re.fullmatch(r'\s*<pre class="bus-code"[^>]*>(.*)</pre>\s*', value_html, re.DOTALL)
    assert block, value_html
    return html.unescape(strip_tags(block.group(1)))


def _assert_indented_json(text: str, value) -> None:
    """``text`` is ``value`` as JSON indented by two (in the key order the database keeps)."""
    assert json.loads(text) == value
    assert text == json.dumps(json.loads(text), indent=2) + "\n"


@pytest.fixture
def outbox_row(db):
    message_id = uuid.uuid4()
    envelope = {"id": str(message_id), "type": "ordering.PlaceOrder", "data": {"lines": [{"sku": "MUG-1"}]}}
    row = OutboxMessage.objects.create(
        message_id=message_id, kind="command", message_type="ordering.PlaceOrder",
        correlation_id=uuid.uuid4(), envelope=envelope, available_at=AT, published_at=AT,
    )
    OutboxMessage.objects.filter(pk=row.pk).update(created_at=AT)
    return row


@pytest.fixture
def dead_letter(db):
    letter = DeadLetter.objects.create(
        message_id=uuid.uuid4(), message_type="ordering.PlaceOrder", context="ordering",
        consumer="ordering:ordering.PlaceOrder", reason=DeadLetter.Reason.HANDLER_FAILED,
        error="ValueError: boom", traceback=TRACEBACK,
        body={"id": "m-1", "data": {"order_id": "o-1"}}, headers={"retries": 5, "origin": "ordering@host"},
    )
    DeadLetter.objects.filter(pk=letter.pk).update(created_at=AT)
    return letter


@pytest.fixture
def task_result(db):
    result = TaskResult.objects.create(
        task_id=str(uuid.uuid4()), task_name="ordering.PlaceOrder", status="FAILURE",
        result=json.dumps({"exc_type": "ValueError", "exc_message": ["boom"]}), traceback=TRACEBACK,
        meta=json.dumps({"children": []}),
    )
    TaskResult.objects.filter(pk=result.pk).update(date_done=AT)  # set on every save otherwise
    return result


def test_the_outbox_envelope_is_indented_and_highlighted(admin_client, outbox_row):
    page = admin_client.get(reverse("admin:messaging_outboxmessage_change", args=[outbox_row.pk])).content.decode()

    envelope = _readonly_field(page, "envelope_pretty")
    _assert_indented_json(_code_block_text(envelope), outbox_row.envelope)
    assert '<span style="color:' in envelope


def test_a_dead_letter_shows_its_traceback_as_written_and_its_body_and_headers_indented(admin_client, dead_letter):
    page = admin_client.get(reverse("admin:messaging_deadletter_change", args=[dead_letter.pk])).content.decode()

    assert _code_block_text(_readonly_field(page, "traceback_pre")) == TRACEBACK
    _assert_indented_json(_code_block_text(_readonly_field(page, "body_pretty")), dead_letter.body)
    _assert_indented_json(_code_block_text(_readonly_field(page, "headers_pretty")), dead_letter.headers)


def test_a_truncated_dead_letter_body_is_shown_as_the_text_that_was_kept(admin_client, settings):
    settings.BUS_DEAD_LETTER_BODY_LIMIT = 40
    letter = dead_letter_record(reason=DeadLetter.Reason.INVALID_ENVELOPE, context="basket",
                                body={"padding": "x" * 100}, error="big")

    page = admin_client.get(reverse("admin:messaging_deadletter_change", args=[letter.pk])).content.decode()

    assert _code_block_text(_readonly_field(page, "body_pretty")) == letter.body + "\n"


def test_a_task_result_shows_its_result_indented_and_its_traceback_as_written(admin_client, task_result):
    page = admin_client.get(
        reverse("admin:django_celery_results_taskresult_change", args=[task_result.pk])
    ).content.decode()

    _assert_indented_json(_code_block_text(_readonly_field(page, "result_pretty")), json.loads(task_result.result))
    assert _code_block_text(_readonly_field(page, "traceback_pre")) == TRACEBACK
    assert AT_TEXT in _readonly_field(page, "date_done")


def test_task_results_cannot_be_added_changed_or_deleted(admin_client, task_result):
    change_url = reverse("admin:django_celery_results_taskresult_change", args=[task_result.pk])

    detail = admin_client.get(change_url)
    changed = admin_client.post(change_url, {"task_id": task_result.task_id, "status": "SUCCESS"})
    deleted = admin_client.post(
        reverse("admin:django_celery_results_taskresult_delete", args=[task_result.pk]), {"post": "yes"}
    )

    assert detail.status_code == 200 and b'type="submit" value="Save"' not in detail.content
    assert changed.status_code == 403 and deleted.status_code == 403
    assert admin_client.get(reverse("admin:django_celery_results_taskresult_add")).status_code == 403
    task_result.refresh_from_db()
    assert task_result.status == "FAILURE"


def test_task_results_keep_celerys_filters_and_search(admin_client, task_result):
    TaskResult.objects.create(task_id="other", task_name="catalog.ReserveStock", status="SUCCESS")
    url = reverse("admin:django_celery_results_taskresult_changelist")

    failed = admin_client.get(url, {"status__exact": "FAILURE"})
    searched = admin_client.get(url, {"q": "ReserveStock"})

    assert list(failed.context["cl"].result_list) == [task_result]
    assert [r.task_id for r in searched.context["cl"].result_list] == ["other"]


@pytest.mark.parametrize("admin_name, fixture", [
    ("messaging_outboxmessage", "outbox_row"),
    ("messaging_deadletter", "dead_letter"),
    ("django_celery_results_taskresult", "task_result"),
])
def test_lists_and_detail_pages_show_times_to_the_second(admin_client, request, admin_name, fixture):
    obj = request.getfixturevalue(fixture)

    changelist = admin_client.get(reverse(f"admin:{admin_name}_changelist")).content.decode()
    detail = admin_client.get(reverse(f"admin:{admin_name}_change", args=[obj.pk])).content.decode()

    assert AT_TEXT in changelist
    assert AT_TEXT in detail


@pytest.mark.django_db
def test_the_inbox_list_shows_times_to_the_second(admin_client):
    row = InboxMessage.objects.create(message_id=uuid.uuid4(), consumer="c", message_type="ordering.PlaceOrder")
    InboxMessage.objects.filter(pk=row.pk).update(handled_at=AT)

    assert AT_TEXT in admin_client.get(reverse("admin:messaging_inboxmessage_changelist")).content.decode()


@pytest.mark.parametrize("admin_name, fixture, id_field", [
    ("messaging_outboxmessage", "outbox_row", "message_id"),
    ("messaging_deadletter", "dead_letter", "message_id"),
    ("django_celery_results_taskresult", "task_result", "task_id"),
])
def test_list_columns_show_ids_short_on_one_line_with_the_whole_id_on_hover(
    admin_client, request, admin_name, fixture, id_field
):
    full_id = str(getattr(request.getfixturevalue(fixture), id_field))

    changelist = admin_client.get(reverse(f"admin:{admin_name}_changelist")).content.decode()

    assert f'title="{full_id}" style="white-space: nowrap">{full_id[:8]}</span>' in changelist
    assert f">{full_id}<" not in changelist


@pytest.mark.django_db
def test_labels_read_naturally(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()

    assert "Price list entries" in index and "entrys" not in index
    assert ">Message bus</a>" in index


def test_an_order_line_in_its_order_reads_as_what_was_ordered(admin_client, catalog_product):
    from decimal import Decimal

    from apps.basket.services import basket_add_item, basket_checkout
    from apps.ordering.models import Order
    from messaging.testing import TestBus

    basket_add_item(customer_id="c1", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))
    basket_checkout(customer_id="c1")
    TestBus().run_until_quiet()
    order = Order.objects.get()

    page = admin_client.get(reverse("admin:ordering_order_change", args=[order.pk])).content.decode()

    assert "2 x MUG-1 at 10.00" in page and "OrderLine object" not in page
