"""A checkout started from the admin, as README's "Trying it" tells a new user: seed the
demo, check out alice's basket, watch her order reach Paid, and read its conversation:
every step, who sent it and which context handled it, and the sequence diagram.
"""

import re

import pytest
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

pytestmark = pytest.mark.browser

#: A paid checkout's messages: (type, who sent it, the context that handles it; None: no subscriber).
PAID_CHECKOUT = (
    ("ordering.PlaceOrder", "basket", "ordering"),
    ("ordering.OrderStarted", "ordering", "basket"),
    ("catalog.ReserveStock", "ordering", "catalog"),
    ("catalog.StockReserved", "catalog", "ordering"),
    ("payment.ProcessPayment", "ordering", "payment"),
    ("payment.PaymentSucceeded", "payment", "ordering"),
    ("ordering.OrderPaid", "ordering", None),
)
#: alice's seeded basket at the catalog's prices: 2 mugs at 10.00 and a teapot at 32.00.
ALICE_TOTAL = "52.00"


def timeline_step(page: Page, message_type: str):
    """The conversation timeline's row of one message type; its cells."""
    row = page.locator("#timeline tbody tr").filter(
        has=page.locator("td:nth-child(2) strong", has_text=re.compile(rf"^{re.escape(message_type)}$")))
    expect(row).to_have_count(1)
    return row.locator("td")


def test_a_seeded_basket_checked_out_from_the_admin_reaches_paid_and_its_conversation_shows_each_step(
        page, live_platform, snap):
    # Given the demo data, seeded as the README says.
    live_platform.manage("seed_demo")
    page.goto("/admin/basket/basket/")
    alice = change_list_rows(page).filter(has=page.get_by_role("link", name="alice", exact=True))
    expect(alice).to_have_count(1)
    # The catalog's price changes reach the basket as messages: check out at the prices they set.
    alice.get_by_role("link", name="alice", exact=True).click()
    reload_until(page, lambda _: page.locator("tr.has_original td.field-price_version").all_inner_texts() == ["1", "1"],
                 what="alice's basket lines to take the catalog's price changes (price version 1)", snap=snap)
    snap(page, "alice-basket")

    # When the operator checks out alice's basket with the admin's action.
    page.goto("/admin/basket/basket/")
    run_action(page, "Check out selected baskets", alice)
    expect(success_message(page)).to_contain_text("Basket of alice: checkout started, order")
    snap(page, "checkout-started")

    # Then the message leads to the order, which reaches Paid.
    order_id = success_message(page).get_by_role("link").inner_text()
    success_message(page).get_by_role("link").click()
    change_list_rows(page).get_by_role("link").first.click()
    expect(readonly_field(page, "customer_id")).to_have_text("alice")
    snap(page, "order-placed")
    reload_until(page, order_is_paid, what="alice's order to show Paid", snap=snap)
    expect(readonly_field(page, "total")).to_have_text(ALICE_TOTAL)
    snap(page, "order-paid")

    # And its conversation shows each step: who sent it, which context handled it.
    open_conversation(page)
    expect(page.get_by_role("heading", name=f"Conversation {order_id}")).to_be_visible()
    for message_type, sender, receiver in PAID_CHECKOUT:
        cells = timeline_step(page, message_type)
        expect(cells.nth(2)).to_have_text(sender)
        expect(cells.nth(6)).to_have_text(
            re.compile(rf"^\s*{receiver}\s+handled\b") if receiver else re.compile(r"^\s*no subscribers\s*$"))
    # The checkout's deadline waits, scheduled, for an order that is paid by now.
    expect(timeline_step(page, "ordering.ExpireOrder").nth(7)).to_have_text("scheduled")
    # The diagram draws a lane for each context and an arrow, linked to its row, for each step.
    diagram = page.get_by_role("img", name=f"Sequence diagram of conversation {order_id}")
    expect(diagram).to_be_visible()
    for lane in ("basket", "ordering", "catalog", "payment"):
        expect(diagram.locator("text", has_text=re.compile(rf"^{lane}$"))).to_have_count(1)
    for message_type, _, _ in PAID_CHECKOUT:
        expect(diagram.get_by_role("link", name=re.compile(rf"^#\d+ {re.escape(message_type)}\b"))).to_have_count(1)
    snap(page, "conversation")
