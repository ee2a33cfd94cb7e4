"""Repairing what failed, from the admin, on real workers: an operator finds a dead letter
from the order it holds up, sees the failing consumer's error, retries that one delivery
and watches the worker handle it and the order complete; another dead letter is discarded
with a note. Each act shows in the dead letter's repair history, and Flower shows a
dead-lettered delivery as FAILURE until a retry of it succeeds.
"""

import json
import re
import uuid

import pytest
from messaging.task_message import delivery_id
from playwright.sync_api import Page, expect

from tests.browser.pages import (
    change_list_rows,
    open_conversation,
    order_is_paid,
    readonly_field,
    reload_until,
    run_action,
    success_message,
)
from tests.polling import wait_for

pytestmark = pytest.mark.browser

#: The event ordering cannot act on for an order it has not recorded: its handler raises
#: Order.DoesNotExist on every attempt, and the delivery is dead-lettered.
STOCK_RESERVED = "catalog.StockReserved"
STOCK_RESERVED_HANDLER = "ordering:catalog.StockReserved"

#: The one step no page offers: orders change only through messages (their admin is
#: read-only), and a PlaceOrder would reserve stock afresh and complete without the dead
#: letter. So the shell records the order as ordering's PlaceOrder had before it asked for
#: stock: awaiting the stock confirmation that is now a dead letter.
RECORD_THE_ORDER = """
import json, uuid
from decimal import Decimal
from apps.ordering.models import Order
Order.objects.create(id=uuid.UUID({order_id!r}), customer_id="dave", total=Decimal("10.00"))
print(json.dumps(True))
"""


def announce_stock_reserved(live_platform, order_id: str) -> str:
    """catalog's StockReserved for ``order_id``, published with the operator's CLI in catalog's
    name, in the order's conversation; its message id."""
    return live_platform.manage(
        "publish_event", STOCK_RESERVED, "--as-context", "catalog", "--correlation-id", order_id,
        "--data", json.dumps({"order_id": order_id}),
    ).strip()


def open_dead_letter_rows(page: Page, message_id: str, *, snap):
    """The dead-letter list searched for one message, once its dead letter is there."""
    page.goto(f"/admin/messaging/deadletter/?q={message_id}")
    rows = change_list_rows(page)
    reload_until(page, lambda _: rows.count() == 1, what=f"a dead letter of message {message_id}", snap=snap)
    return rows


def flower_task(live_platform, task_id: str, state: str) -> dict:
    """Flower's task ``task_id`` once Flower lists it in ``state``."""
    return wait_for(lambda: live_platform.flower_tasks(state=state).get(task_id), timeout=60, interval=1,
                    message=f"Flower to list task {task_id} as {state}")


def repair_history(page: Page):
    """The rows of a dead letter's repair history (its inline on the dead letter's page)."""
    return page.locator("#actions-group tbody tr")


def message_id_shown(page: Page, message_id: str):
    """A list's short message id column, whose tooltip is the whole id."""
    return page.locator(f'span.bus-id[title="{message_id}"]')


def test_a_dead_letter_retried_from_its_page_is_handled_by_the_worker_and_its_order_completes(
        page, live_platform, snap):
    # Given catalog's word that it reserved stock for an order ordering has not recorded.
    order_id = str(uuid.uuid4())
    message_id = announce_stock_reserved(live_platform, order_id)

    # Then it is an open dead letter of ordering's handler,
    rows = open_dead_letter_rows(page, message_id, snap=snap)
    expect(rows).to_contain_text(STOCK_RESERVED)
    expect(rows.locator("td.field-context")).to_have_text("ordering")
    expect(rows.locator("td.field-status")).to_have_text("Open")
    snap(page, "dead-letters")
    # in its failure group (same error, same consumer),
    page.get_by_role("link", name="Failure groups").click()
    group = page.locator("#failure-groups tbody tr").filter(has_text=STOCK_RESERVED_HANDLER)
    expect(group).to_have_count(1)
    expect(group).to_contain_text("Handler failed")
    expect(group).to_contain_text("DoesNotExist")
    snap(page, "failure-groups")
    group.locator("td").nth(4).get_by_role("link").click()
    expect(message_id_shown(page, message_id)).to_be_visible()
    # on the overview, which counts the open ones,
    page.goto("/admin/messaging/overview/")
    by_consumer = page.locator("#dead-letters tbody tr").filter(has_text=STOCK_RESERVED_HANDLER)
    expect(by_consumer).to_contain_text("ordering")
    open_count = page.locator("#dead-letters tbody tr").last.get_by_role("link").inner_text()
    # beside the processes' liveness and the broker's queues (read as /metrics reads them),
    expect(page.locator("#processes tbody tr").filter(has_text="worker-ordering")).to_contain_text("consuming")
    expect(page.locator("#processes tbody tr").filter(has_text="relay")).to_have_count(1)
    expect(page.locator("#queues tbody tr").filter(has_text="ordering.commands")).to_contain_text("ordering")
    expect(page.locator("#retrying")).to_contain_text("Retrying now")
    snap(page, "overview")
    page.locator("#dead-letters tbody tr").last.get_by_role("link").click()
    expect(page.locator("p.paginator")).to_contain_text(re.compile(rf"^\s*{open_count} dead letters?\b"))
    # and a FAILURE in Flower, as the task of this message's delivery to ordering, naming the dead letter.
    task_id = delivery_id(message_id, "ordering")
    failed = flower_task(live_platform, task_id, "FAILURE")
    assert failed["exception"].startswith("DeadLettered('handler_failed (dead letter "), failed["exception"]
    assert failed["worker"].split(".")[0] == "ordering", failed["worker"]
    page.goto(f"{live_platform.flower_url}/task/{task_id}")
    expect(page.get_by_text("DeadLettered").first).to_be_visible()
    snap(page, "flower-task-failed")

    # When the order it was meant for is recorded (see RECORD_THE_ORDER: the one shell step),
    live_platform.shell(RECORD_THE_ORDER.format(order_id=order_id))
    # the operator finds it stuck, and from it the failing step of its conversation.
    page.goto(f"/admin/ordering/order/{order_id}/change/")
    expect(readonly_field(page, "status")).to_have_text("Awaiting stock confirmation")
    expect(readonly_field(page, "conversation_link").locator("a.bus-held-up")).to_have_text("held up: 1 dead letter")
    snap(page, "order-stuck")
    open_conversation(page)
    failing = page.locator(f"#message-{message_id}")
    expect(failing.locator("td").nth(2)).to_have_text("catalog")
    expect(failing.locator("td").nth(6)).to_contain_text("ordering dead-lettered")
    expect(failing.locator("td").nth(6)).to_contain_text("Order matching query does not exist")
    expect(failing.locator("td").nth(7)).to_contain_text("failed")
    snap(page, "conversation-failed")
    failing.get_by_role("link", name="Dead letter").click()
    expect(readonly_field(page, "consumer")).to_have_text(STOCK_RESERVED_HANDLER)
    expect(readonly_field(page, "error")).to_contain_text("Order matching query does not exist")
    snap(page, "dead-letter")
    # And retries it from its page,
    page.get_by_role("button", name="Retry", exact=True).click()
    expect(success_message(page)).to_have_text("1 dead letter(s) sent back to the consumer that failed.")
    expect(readonly_field(page, "status")).to_have_text("Retried")
    expect(page.get_by_role("button", name="Retry", exact=True)).to_have_count(0)

    # Then its repair history says ordering's worker handled it,
    history = repair_history(page)
    reload_until(page, lambda _: history.locator("td.field-what_happened").inner_text()
                 == f"handled by {STOCK_RESERVED_HANDLER}",
                 what="the repair history to say the retry was handled", snap=snap)
    expect(history.locator("td.field-action")).to_have_text("Retried")
    expect(history.locator("td.field-actor")).to_have_text(live_platform.admin_username)
    snap(page, "dead-letter-retried")
    # the order completes, and its conversation shows the flow going on from the repaired step,
    page.goto(f"/admin/ordering/order/{order_id}/change/")
    reload_until(page, order_is_paid, what="the repaired order to show Paid", snap=snap)
    snap(page, "order-paid")
    open_conversation(page)
    expect(page.locator(f"#message-{message_id} td").nth(7)).to_contain_text("done")
    for message_type in ("payment.ProcessPayment", "payment.PaymentSucceeded", "ordering.OrderPaid"):
        expect(page.locator("#timeline tbody tr").filter(has_text=message_type)).to_have_count(1)
    snap(page, "conversation-repaired")
    # and Flower lists the same delivery's task as SUCCESS now.
    flower_task(live_platform, task_id, "SUCCESS")
    page.goto(f"{live_platform.flower_url}/task/{task_id}")
    expect(page.get_by_text("SUCCESS", exact=True)).to_be_visible()
    snap(page, "flower-task-succeeded")


def test_a_dead_letter_discarded_with_a_note_keeps_it_in_its_repair_history(page, live_platform, snap):
    # Given a dead letter nobody needs repaired.
    order_id = str(uuid.uuid4())
    message_id = announce_stock_reserved(live_platform, order_id)
    rows = open_dead_letter_rows(page, message_id, snap=snap)
    note = f"test order {order_id[:8]}, never real"

    # When the operator discards it from the list, saying why on the page that asks.
    run_action(page, "Discard selected dead letters…", rows)
    expect(page.get_by_role("heading", name="Discard dead letters")).to_be_visible()
    expect(page.locator("#content")).to_contain_text(f"{STOCK_RESERVED} → ordering")
    page.get_by_label("Why do these need no repair?").fill(note)
    snap(page, "discard-asks-why")
    page.get_by_role("button", name="Discard", exact=True).click()

    # Then it leaves the open ones,
    expect(success_message(page)).to_have_text("1 dead letter(s) discarded.")
    expect(rows).to_have_count(0)
    snap(page, "dead-letters-open")
    # and is kept, discarded, with who did it and the note in its repair history.
    page.locator("#changelist-filter").get_by_role("link", name="Discarded", exact=True).click()
    expect(rows.locator("td.field-status")).to_have_text("Discarded")
    rows.locator("th a").click()
    expect(readonly_field(page, "status")).to_have_text("Discarded")
    history = repair_history(page)
    expect(history.locator("td.field-action")).to_have_text("Discarded")
    expect(history.locator("td.field-actor")).to_have_text(live_platform.admin_username)
    expect(history.locator("td.field-note")).to_have_text(note)
    expect(page.get_by_role("button", name=re.compile("^(Retry|Discard…)$"))).to_have_count(0)
    expect(page.get_by_role("button", name="Reopen…")).to_be_visible()  # a discard made by mistake is undone
    snap(page, "dead-letter-discarded")
    # Its conversation says so too.
    open_conversation(page)
    expect(page.locator(f"#message-{message_id}")).to_contain_text(
        f"Discarded by {live_platform.admin_username} at")
    expect(page.locator(f"#message-{message_id}")).to_contain_text(note)
    snap(page, "conversation-discarded")

    # And Flower's failed tasks are the deliveries of the dead letters nobody retried (a retry
    # that succeeded turned its task SUCCESS): this one among them.
    page.goto("/admin/messaging/deadletter/?status=all")
    not_retried = {
        delivery_id(row.locator("span.bus-id").get_attribute("title"), row.locator("td.field-context").inner_text())
        for row in change_list_rows(page).all() if row.locator("td.field-status").inner_text() != "Retried"
    }
    assert delivery_id(message_id, "ordering") in not_retried

    def failed_in_flower() -> set[str]:
        return set(live_platform.flower_tasks(state="FAILURE"))

    try:
        wait_for(lambda: failed_in_flower() == not_retried, timeout=60, interval=1, message="Flower to catch up")
    except pytest.fail.Exception:
        pytest.fail(f"Flower's FAILURE tasks {sorted(failed_in_flower())} are not the deliveries of the dead "
                    f"letters nobody retried {sorted(not_retried)}", pytrace=False)
