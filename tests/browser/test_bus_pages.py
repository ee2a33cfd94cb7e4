"""The admin's topology page: every context, the messages each owns, and who receives
each one, drawn from the registry; an event nobody subscribes to is marked, not left out.
(The overview is seen with a dead letter open, in test_dead_letter_repair.)
"""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.live_platform import CONTEXTS

pytestmark = pytest.mark.browser


def test_the_topology_page_names_every_context_and_who_receives_each_message(page, snap):
    page.goto("/admin/")
    page.get_by_role("link", name="Topology", exact=True).click()

    # Once the page has loaded (the click returns as it starts to), every context has its box.
    page.wait_for_load_state()
    diagram = page.locator("svg.bus-topology")
    assert set(diagram.locator("g.context text").all_text_contents()) == CONTEXTS
    flows = page.locator("#topology-table tbody tr")
    price_changed = flows.filter(has=page.get_by_role("rowheader", name=re.compile(r"^catalog\.ProductPriceChanged\b")))
    for subscriber in ("basket", "ordering"):
        expect(price_changed).to_contain_text(f"{subscriber} on {subscriber}.events.catalog.ProductPriceChanged")
    order_paid = flows.filter(has=page.get_by_role("rowheader", name=re.compile(r"^ordering\.OrderPaid\b")))
    expect(order_paid.locator(".unreceived")).to_have_text("No subscribers")
    expect(diagram.locator('g.unreceived[data-type="ordering.OrderPaid"]')).to_contain_text("no subscribers")
    snap(page, "topology")


def test_the_asyncapi_page_reads_as_tables_with_every_version_of_a_contract(page, snap):
    page.goto("/admin/")
    page.get_by_role("link", name="AsyncAPI", exact=True).click()
    page.wait_for_load_state()

    expect(page.locator("h1")).to_have_text("AsyncAPI document")
    # Nothing of the document is shown as an admin notice.
    expect(page.locator("ul.messagelist")).to_have_count(0)
    current = page.locator('[id="message-catalog.ProductPriceChanged"]')
    older = page.locator('[id="message-catalog.ProductPriceChanged.v1"]')
    expect(current).to_contain_text("currency")
    expect(older).to_contain_text("version 1")
    expect(older.locator("table").last).not_to_contain_text("currency")
    expect(page.get_by_role("link", name=re.compile("Download the document"))).to_be_visible()
    snap(page, "asyncapi")
