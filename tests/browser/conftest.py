"""A live platform and a real browser for the tests in this folder.

``live_platform`` runs ``manage.py run_platform`` on a RabbitMQ vhost and a
PostgreSQL database of its own (made afresh; scripts/test starts the services),
once for the whole folder, and stops it before any other test runs. ``page`` is
Debian's Chromium, driven by Playwright, logged into its admin. Every
screenshot (``snap``, and one of the page whenever a test fails) and the
platform's log are kept in ``$BROWSER_ARTIFACTS`` (default
``tests/browser/artifacts/``), emptied at the start of each run.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

from tests.browser.live_platform import LivePlatform
from tests.browser.pages import log_in
from tests.own_services import fresh_vhost_and_database

#: Debian's Chromium (``apt-get install chromium``, which scripts/test does):
#: Playwright never downloads a browser of its own here.
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="package")
def artifacts() -> Path:
    folder = Path(os.environ.get("BROWSER_ARTIFACTS") or Path(__file__).parent / "artifacts")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="package")
def live_platform(artifacts, tmp_path_factory):
    broker_url, database_url = os.environ.get("CELERY_BROKER_URL", ""), os.environ.get("DATABASE_URL", "")
    if not (broker_url.startswith("amqp://") and database_url.startswith(("postgres://", "postgresql://"))):
        pytest.fail("the browser tests run the platform on RabbitMQ and PostgreSQL: run them with scripts/test "
                    f"(broker: {broker_url.split('://')[0] or 'unset'}, database: {database_url.split('://')[0] or 'unset'})")
    own_broker_url, own_database_url = fresh_vhost_and_database(broker_url, database_url, suffix="browser")
    platform = LivePlatform(broker_url=own_broker_url, database_url=own_database_url,
                            workdir=tmp_path_factory.mktemp("live-platform"), log_path=artifacts / "run_platform.log")
    platform.start()
    try:
        platform.wait_until_serving()
        yield platform
    finally:
        left_running = platform.stop()
    assert not left_running, f"run_platform left processes running (killed now): {left_running}"


@pytest.fixture(scope="package")
def chromium():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/test installs it)")
    with sync_playwright() as playwright:
        # No sandbox: it refuses to run as root (as tests do here), and these pages are our own.
        # No /dev/shm: a container's is often too small for Chromium.
        # Generous, like the pages' own timeout: the platform's workers share the machine.
        expect.set_options(timeout=30_000)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def anonymous_page(chromium, live_platform):
    """A fresh browser (no cookies) on the admin's address; it sends Flower's login to Flower only."""
    context = chromium.new_context(
        base_url=live_platform.admin_url,
        viewport={"width": 1280, "height": 900},
        http_credentials={"username": live_platform.flower_username, "password": live_platform.flower_password,
                          "origin": live_platform.flower_url},
    )
    # Generous: a page may be slow while every worker of the platform is busy.
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def page(anonymous_page, live_platform):
    """Logged into the admin as the superuser run_platform created on its first run."""
    log_in(anonymous_page, live_platform.admin_username, live_platform.admin_password)
    anonymous_page.get_by_role("heading", name="Site administration").wait_for()
    return anonymous_page


@pytest.fixture
def snap(request, artifacts):
    """``snap(page, name)``: a full-page screenshot kept as an artifact; its path."""
    taken = []

    def take(page, name: str) -> Path:
        taken.append(name)
        return _screenshot(page, _folder_of(request.node, artifacts) / f"{len(taken):02d}-{name}.png")

    return take


def _folder_of(item, artifacts: Path) -> Path:
    """A test's own folder of screenshots."""
    return artifacts / re.sub(r"[^\w.-]+", "_", item.name)


def _screenshot(page, path: Path) -> Path:
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=path, full_page=True)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report says where its page was, with a screenshot, and where the platform's log is."""
    report = yield
    if report.when == "call" and report.failed:
        page = item.funcargs.get("page") or item.funcargs.get("anonymous_page")
        if page is not None:
            try:
                shot = _screenshot(page, _folder_of(item, item.funcargs["artifacts"]) / "failed.png")
            except PlaywrightError as exc:  # the browser itself is what failed
                shot = f"none ({exc})"
            report.sections.append(("browser", f"page {page.url}\nscreenshot {shot}"))
        if "live_platform" in item.funcargs:
            report.sections.append(("run_platform", str(item.funcargs["live_platform"].log_path)))
    return report
