"""An operator's day, in a real browser, on a live platform with real workers:
logging in, following a checkout to Paid, finding a message that failed, and
watching Flower list who ran each step.
"""

import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.pages import log_in, readonly_field, reload_until, save_new
from tests.polling import wait_for

pytestmark = pytest.mark.browser

#: Checks out a customer's basket the way the shop does; prints the order and its conversation.
CHECKOUT = """
import json
from apps.basket.services import basket_checkout
from messaging.models import OutboxMessage
order_id = basket_checkout(customer_id={customer!r})
placed = OutboxMessage.objects.get(message_type="ordering.PlaceOrder", envelope__data__order_id=str(order_id))
print(json.dumps({{"order_id": str(order_id), "correlation_id": str(placed.correlation_id)}}))
"""

#: A product and a basket holding it, made by the contexts' own services.
PRODUCT_IN_A_BASKET = """
import json
from decimal import Decimal
from apps.basket.services import basket_add_item
from apps.catalog.services import product_create
product_create(sku={sku!r}, name="Lamp", price=Decimal("25.00"), stock=3)
basket_add_item(customer_id={customer!r}, sku={sku!r}, quantity=1, unit_price=Decimal("25.00"))
print(json.dumps(True))
"""

#: Catalog announcing a reservation for an order ordering never heard of: ordering's handler
#: fails on every attempt, and the event is dead-lettered.
STOCK_RESERVED_FOR_AN_UNKNOWN_ORDER = """
import json, uuid
from django.db import transaction
from apps.catalog.messages import StockReserved
from messaging.outbox import publish
with transaction.atomic():
    envelope = publish(StockReserved(order_id=uuid.UUID({order_id!r})))
print(json.dumps(str(envelope.id)))
"""

#: The messages a conversation published, by id.
CONVERSATION = """
import json
from messaging.models import OutboxMessage
rows = OutboxMessage.objects.filter(correlation_id={correlation_id!r}, published_at__isnull=False)
print(json.dumps({{str(row.message_id): row.message_type for row in rows}}))
"""

#: Which context's worker runs each message of a paid checkout (OrderPaid has no subscriber,
#: ExpireOrder waits for its deadline: neither is a task).
CHECKOUT_TASKS = {
    "ordering.PlaceOrder": {"ordering"},
    "ordering.OrderStarted": {"basket"},
    "catalog.ReserveStock": {"catalog"},
    "catalog.StockReserved": {"ordering"},
    "payment.ProcessPayment": {"payment"},
    "payment.PaymentSucceeded": {"ordering"},
}


def order_is_paid(page) -> bool:
    return readonly_field(page, "status").inner_text() == "Paid"


def test_an_operator_logs_in_with_the_password_run_platform_was_given(anonymous_page, live_platform, snap):
    anonymous_page.goto("/admin/")
    assert "/admin/login/" in anonymous_page.url
    snap(anonymous_page, "login")

    log_in(anonymous_page, live_platform.admin_username, "not-the-password")
    expect(anonymous_page.get_by_text("Please enter the correct username and password")).to_be_visible()

    log_in(anonymous_page, live_platform.admin_username, live_platform.admin_password)
    anonymous_page.get_by_role("heading", name="Site administration").wait_for()
    for section in ("Messaging", "Ordering", "Catalog", "Basket"):
        expect(anonymous_page.get_by_role("link", name=section, exact=True)).to_be_visible()
    snap(anonymous_page, "admin-index")


def test_a_basket_filled_in_the_admin_and_checked_out_shows_its_order_paid(page, live_platform, snap):
    # Given a product and a basket holding it, entered through the admin's forms.
    page.goto("/admin/catalog/product/add/")
    page.get_by_label("Sku").fill("BROWSER-MUG")
    page.get_by_label("Name").fill("Browser mug")
    page.get_by_label("Price").fill("10.00")
    page.get_by_label("Stock available").fill("5")
    save_new(page, snap=snap, name="product-form")

    page.goto("/admin/basket/basket/add/")
    page.get_by_label("Customer id").fill("browser-alice")
    page.get_by_text("Add another Basket line").click()
    page.locator("#id_lines-0-sku").fill("BROWSER-MUG")
    page.locator("#id_lines-0-quantity").fill("2")
    page.locator("#id_lines-0-unit_price").fill("10.00")
    save_new(page, snap=snap, name="basket-form")

    # When the customer checks out (the shop's checkout; the admin has no such action yet).
    order = live_platform.shell(CHECKOUT.format(customer="browser-alice"))

    # Then the operator finds the order by its customer and watches it reach Paid.
    page.goto("/admin/ordering/order/?q=browser-alice")
    page.get_by_role("link", name=order["order_id"]).click()
    snap(page, "order-placed")
    reload_until(page, order_is_paid, what="the order to show Paid", snap=snap)
    expect(readonly_field(page, "total")).to_have_text("20.00")
    snap(page, "order-paid")


def test_an_event_whose_handler_keeps_failing_is_a_dead_letter_in_the_admin(page, live_platform, snap):
    unknown_order = str(uuid.uuid4())

    message_id = live_platform.shell(STOCK_RESERVED_FOR_AN_UNKNOWN_ORDER.format(order_id=unknown_order))

    page.goto(f"/admin/messaging/deadletter/?q={message_id}")
    rows = page.locator("#result_list tbody tr")
    reload_until(page, lambda _: rows.count() == 1, what=f"a dead letter for message {message_id}", snap=snap)
    expect(rows).to_contain_text("catalog.StockReserved")
    snap(page, "dead-letters")
    rows.locator("th a").click()
    expect(readonly_field(page, "context")).to_have_text("ordering")
    expect(readonly_field(page, "reason")).to_have_text("Handler failed after all retries")
    expect(readonly_field(page, "error")).to_contain_text("Order matching query does not exist")
    expect(readonly_field(page, "body")).to_contain_text(unknown_order)
    snap(page, "dead-letter")


def test_flower_lists_each_task_of_a_checkout_with_the_worker_that_ran_it(page, live_platform, snap):
    live_platform.shell(PRODUCT_IN_A_BASKET.format(sku="BROWSER-LAMP", customer="browser-bob"))
    order = live_platform.shell(CHECKOUT.format(customer="browser-bob"))
    page.goto(f"/admin/ordering/order/{order['order_id']}/change/")
    reload_until(page, order_is_paid, what="the order to show Paid", snap=snap)
    conversation = live_platform.shell(CONVERSATION.format(correlation_id=order["correlation_id"]))

    def workers_by_task_name() -> dict[str, set[str]]:
        tasks = live_platform.flower_api("/api/tasks").values()
        ran = {}
        for task in tasks:
            # The message id is in the task's kwargs (the envelope's repr) whatever its task id.
            if task["state"] == "SUCCESS" and any(message_id in task["kwargs"] for message_id in conversation):
                ran.setdefault(task["name"], set()).add(task["worker"].split(".")[0])
        return ran

    wait_for(lambda: workers_by_task_name().keys() >= CHECKOUT_TASKS.keys(), timeout=60, interval=1,
             message="Flower to list every task of the checkout")
    assert workers_by_task_name() == CHECKOUT_TASKS

    page.goto(f"{live_platform.flower_url}/tasks")
    page.get_by_text("payment.PaymentSucceeded").first.wait_for()
    snap(page, "flower-tasks")
