"""What a person does on the admin's pages, for the browser tests: log in, fill
a form, run an action on chosen rows, watch a page until the platform has moved on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.polling import wait_for

#: Seconds a flow gets to show on a page: generous, the machine may be busy.
PAGE_TIMEOUT = 90

Snap = Callable[[Page, str], Path]


def log_in(page: Page, username: str, password: str) -> None:
    """Log in through the admin's own form (wherever the page is, it goes to the login first)."""
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def save_new(page: Page, *, snap: Snap, name: str) -> None:
    """Save a filled-in add form (its screenshot first) and see the admin confirm it."""
    snap(page, name)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("was added successfully")).to_be_visible()


def save_changes(page: Page, *, snap: Snap, name: str) -> None:
    """Save a change form (its screenshot first) and see the admin confirm it."""
    snap(page, name)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("was changed successfully")).to_be_visible()


def change_list_rows(page: Page) -> Locator:
    """The rows of a change list."""
    return page.locator("#result_list tbody tr")


def run_action(page: Page, action: str, rows: Locator) -> None:
    """Tick ``rows`` of a change list and run the action labelled ``action``."""
    for row in rows.all():
        row.locator("input.action-select").check()
    page.locator("select[name=action]").select_option(label=action)
    page.get_by_role("button", name="Go", exact=True).click()


def success_message(page: Page) -> Locator:
    """The admin's green message after an act."""
    return page.locator("ul.messagelist li.success")


def reload_until(page: Page, ready: Callable[[Page], bool], *, what: str, snap: Snap,
                 timeout: float = PAGE_TIMEOUT) -> None:
    """Reload the page until ``ready(page)``; on timeout, fail with a screenshot of the page as it was."""
    def reloaded_and_ready() -> bool:
        page.reload()
        return ready(page)

    try:
        wait_for(reloaded_and_ready, timeout=timeout, interval=1, message=what)
        return
    except pytest.fail.Exception as timed_out:
        failure = str(timed_out)
    pytest.fail(f"{failure} on {page.url}; the page then: {snap(page, 'timed-out')}", pytrace=False)


def readonly_field(page: Page, field: str) -> Locator:
    """A read-only field's value on an admin change page."""
    return page.locator(f".field-{field} .readonly")


def open_conversation(page: Page) -> None:
    """On a change page: follow the row's link to its conversation (beside it, a "held up" link may stand)."""
    readonly_field(page, "conversation_link").locator("a.bus-conversation").click()


def order_is_paid(page: Page) -> bool:
    """On an order's page: its status reads Paid."""
    return readonly_field(page, "status").inner_text() == "Paid"
