"""Flower shows each delivery of an event as a task of its own: a price changed in the
admin reaches basket and ordering, and Flower lists two tasks, each with its own id
(``delivery_id(message id, context)``) and the worker of its context.
"""

import re

import pytest
from messaging.task_message import delivery_id
from playwright.sync_api import expect

from tests.browser.pages import (
    change_list_rows,
    open_conversation,
    readonly_field,
    reload_until,
    save_changes,
    save_new,
)
from tests.polling import wait_for

pytestmark = pytest.mark.browser

PRICE_CHANGED = "catalog.ProductPriceChanged"
#: The contexts subscribed to a price change.
SUBSCRIBERS = ("basket", "ordering")


def test_an_event_two_contexts_subscribe_to_is_a_task_of_each_in_flower(page, live_platform, snap):
    # Given a product the operator lists in the admin,
    page.goto("/admin/catalog/product/add/")
    page.get_by_label("Sku").fill("BROWSER-VASE")
    page.get_by_label("Name").fill("Browser vase")
    page.get_by_label("Price").fill("20.00")
    page.get_by_label("Stock available").fill("5")
    save_new(page, snap=snap, name="product-listed")

    # When its price is changed there,
    change_list_rows(page).get_by_role("link", name="BROWSER-VASE", exact=True).click()
    page.get_by_label("Price").fill("24.00")
    save_changes(page, snap=snap, name="price-changed")

    # Then ordering's price list takes the new price,
    page.goto("/admin/ordering/pricelistentry/?q=BROWSER-VASE")
    reload_until(page, lambda _: change_list_rows(page).locator("td.field-price").all_inner_texts() == ["24.00"],
                 what="ordering's price list to show BROWSER-VASE at 24.00", snap=snap)
    # the catalog's announcement is found in the outbox by the SKU it carries, and its
    # conversation shows both subscribers handling it,
    page.goto("/admin/messaging/outboxmessage/?q=BROWSER-VASE")
    announcement = change_list_rows(page).filter(has_text=PRICE_CHANGED)
    expect(announcement).to_have_count(1)
    announcement.locator("th a").click()
    message_id = readonly_field(page, "message_id").inner_text()
    open_conversation(page)
    received_by = page.locator(f"#message-{message_id} td").nth(6)
    reload_until(page, lambda _: all(re.search(rf"\b{context}\s+handled\b", received_by.inner_text())
                                     for context in SUBSCRIBERS),
                 what=f"the conversation to show {' and '.join(SUBSCRIBERS)} handling the price change", snap=snap)
    snap(page, "conversation")

    # and Flower lists a task for each subscriber, with its own id and its context's worker.
    deliveries = {delivery_id(message_id, context): context for context in SUBSCRIBERS}

    def both_succeeded() -> dict[str, dict] | None:
        tasks = live_platform.flower_tasks(state="SUCCESS")
        return {task_id: tasks[task_id] for task_id in deliveries} if deliveries.keys() <= tasks.keys() else None

    tasks = wait_for(both_succeeded, timeout=60, interval=1, message=f"Flower to list the tasks {sorted(deliveries)} as SUCCESS")
    assert {task["worker"].split(".")[0] for task in tasks.values()} == set(SUBSCRIBERS)
    for task_id, context in deliveries.items():
        assert tasks[task_id]["name"] == PRICE_CHANGED
        assert tasks[task_id]["worker"].split(".")[0] == context, tasks[task_id]["worker"]
        # The message id stays visible in the task's arguments, whatever the task's id.
        assert message_id in tasks[task_id]["kwargs"], tasks[task_id]["kwargs"]
        page.goto(f"{live_platform.flower_url}/task/{task_id}")
        expect(page.get_by_text(PRICE_CHANGED).first).to_be_visible()
        snap(page, f"flower-task-{context}")
