"""An operator logs into the admin run_platform serves, with the password it was given."""

import pytest
from playwright.sync_api import expect

from tests.browser.pages import log_in

pytestmark = pytest.mark.browser


def test_an_operator_logs_in_with_the_password_run_platform_was_given(anonymous_page, live_platform, snap):
    anonymous_page.goto("/admin/")
    assert "/admin/login/" in anonymous_page.url
    snap(anonymous_page, "login")

    log_in(anonymous_page, live_platform.admin_username, "not-the-password")
    expect(anonymous_page.get_by_text("Please enter the correct username and password")).to_be_visible()

    log_in(anonymous_page, live_platform.admin_username, live_platform.admin_password)
    anonymous_page.get_by_role("heading", name="Site administration").wait_for()
    for page_name in ("Overview", "Topology"):
        expect(anonymous_page.get_by_role("link", name=page_name, exact=True)).to_be_visible()
    for section in ("Message bus", "Ordering", "Catalog", "Basket", "Payment"):
        expect(anonymous_page.get_by_role("link", name=section, exact=True)).to_be_visible()
    snap(anonymous_page, "admin-index")
