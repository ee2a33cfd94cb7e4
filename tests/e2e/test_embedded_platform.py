"""The README's run command on the embedded default: filesystem broker and
SQLite, every process started by ``manage.py run_platform``, flows complete;
the demo data is seeded and checked out from the admin, as the README says."""

import base64
import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.polling import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

FLOWS = textwrap.dedent("""
    import time
    from decimal import Decimal
    from apps.basket.models import BasketLine
    from apps.basket.services import basket_add_item, basket_checkout
    from apps.catalog.services import product_change_price, product_create
    from apps.ordering.models import Order, PriceListEntry

    def wait(predicate, what):
        deadline = time.monotonic() + 60
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.3)

    product_create(sku="E2E-1", name="Vase", price=Decimal("10.00"), stock=5)
    basket_add_item(customer_id="erin", sku="E2E-1", quantity=2, unit_price=Decimal("10.00"))
    product_change_price(sku="E2E-1", new_price=Decimal("12.50"))
    wait(lambda: BasketLine.objects.filter(unit_price=Decimal("12.50"), previous_unit_price=Decimal("10.00")).exists(),
         "the basket to be repriced")
    wait(lambda: PriceListEntry.objects.filter(sku="E2E-1", price=Decimal("12.50")).exists(), "ordering's price list")
    paid = basket_checkout(customer_id="erin")
    wait(lambda: Order.objects.filter(id=paid, status="paid").exists(), "the order to be paid")
    basket_add_item(customer_id="erin", sku="E2E-1", quantity=9, unit_price=Decimal("12.50"))
    rejected = basket_checkout(customer_id="erin")
    wait(lambda: Order.objects.filter(id=rejected, status="cancelled").exists(), "the order to be cancelled")
    print("FLOWS COMPLETE")
""")

#: Waits for the seeded baskets' orders (checked out from the admin) to end as seed_demo says.
SEEDED_OUTCOMES = textwrap.dedent("""
    import sys, time
    from apps.ordering.models import Order, PriceListEntry

    expected = {"alice": "paid", "bob": "cancelled", "carol": "cancelled"}
    deadline = time.monotonic() + 60
    while {o.customer_id: o.status for o in Order.objects.filter(customer_id__in=expected)} != expected:
        if time.monotonic() > deadline:
            sys.exit(f"orders: {list(Order.objects.values_list('customer_id', 'status', 'cancel_reason'))}")
        time.sleep(0.3)
    print("SEEDED OUTCOMES", sorted(PriceListEntry.objects.values_list("sku", flat=True)))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def embedded_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")}
    env["BUS_DATA_DIR"] = str(tmp_path / "var")
    return env


def _get(url: str, auth: str | None = None) -> tuple[int, str]:
    """(status, final URL after redirects); status 0 when nothing answers yet."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.url
    except urllib.error.HTTPError as error:
        return error.code, url
    except OSError:
        return 0, url


def _check_out_every_basket_from_the_admin(site: str, password: str) -> int:
    """Log in, select every open basket with lines, run "Check out"; returns how many checkouts started."""
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def post(path: str, page: str, fields: list[tuple[str, str]]) -> str:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode([("csrfmiddlewaretoken", token), *fields]).encode()
        with browser.open(site + path, data=body, timeout=10) as response:
            return response.read().decode()

    with browser.open(site + "/admin/login/", timeout=10) as response:
        login_page = response.read().decode()
    post("/admin/login/", login_page, [("username", "admin"), ("password", password), ("next", "/admin/")])
    changelist = "/admin/basket/basket/?status__exact=open"
    with browser.open(site + changelist, timeout=10) as response:
        baskets = response.read().decode()
    selected = [("_selected_action", pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', baskets)]
    result = post(changelist, baskets, [("action", "check_out"), ("index", "0"), *selected])
    return result.count("checkout started, order")


def test_run_platform_brings_everything_up_and_the_flows_complete(embedded_env, tmp_path):
    web_port, flower_port = _free_port(), _free_port()
    log_path = tmp_path / "run_platform.log"
    with open(log_path, "w") as log:
        platform = subprocess.Popen(
            [sys.executable, "manage.py", "run_platform", f"--web-port={web_port}", f"--flower-port={flower_port}"],
            cwd=ROOT, env=embedded_env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "every process is up." in log_path.read_text() or platform.poll() is not None,
                 timeout=90, message="every process up")
        time.sleep(0.5)  # the logins after it
        output = log_path.read_text()
        assert platform.poll() is None, output[-3000:]
        assert "EMBEDDED MODE" in output
        assert output.count(" ready.") == 4 and "[tasks]" not in output  # no Celery banners
        admin_password = re.search(r"created admin user 'admin' with password: (\S+)", output).group(1)
        logins_again = output.split("every process is up.")[1]
        assert output.rindex(" ready.") < output.index("every process is up.")
        assert f"admin:  http://127.0.0.1:{web_port}/admin/  user admin, password {admin_password}" in logins_again
        flower_user, flower_password = re.search(
            rf"flower: http://127.0.0.1:{flower_port}/  user (\S+), password (\S+)", logins_again).groups()
        flower_login = f"{flower_user}:{flower_password}"

        flows = subprocess.run([sys.executable, "manage.py", "shell", "-c", FLOWS], cwd=ROOT, env=embedded_env,
                               capture_output=True, text=True, timeout=180)
        assert "FLOWS COMPLETE" in flows.stdout, flows.stdout + flows.stderr + log_path.read_text()[-3000:]

        wait_for(lambda: _get(f"http://127.0.0.1:{web_port}/admin/login/")[0] == 200, message="the admin")
        _, landed_on = _get(f"http://127.0.0.1:{web_port}/admin/messaging/outboxmessage/")
        assert "/admin/login/" in landed_on  # login required
        wait_for(lambda: _get(f"http://127.0.0.1:{flower_port}/", flower_login)[0] == 200, message="Flower")
        assert _get(f"http://127.0.0.1:{flower_port}/")[0] == 401
        assert _get(f"http://127.0.0.1:{flower_port}/metrics")[0] == 401
        assert _get(f"http://127.0.0.1:{flower_port}/metrics", flower_login)[0] == 200

        seeded = subprocess.run([sys.executable, "manage.py", "seed_demo"], cwd=ROOT, env=embedded_env,
                                capture_output=True, text=True, timeout=60)
        assert "filled alice's basket" in seeded.stdout, seeded.stdout + seeded.stderr
        started = _check_out_every_basket_from_the_admin(f"http://127.0.0.1:{web_port}", admin_password)
        assert started == 3, output
        outcomes = subprocess.run([sys.executable, "manage.py", "shell", "-c", SEEDED_OUTCOMES], cwd=ROOT,
                                  env=embedded_env, capture_output=True, text=True, timeout=120)
        assert "SEEDED OUTCOMES ['DESK-1', 'E2E-1', 'LAMP-1', 'MUG-1', 'TEAPOT-1']" in outcomes.stdout, \
            outcomes.stdout + outcomes.stderr + log_path.read_text()[-3000:]
    finally:
        platform.send_signal(signal.SIGTERM)
        try:
            platform.wait(timeout=40)
        except subprocess.TimeoutExpired:
            platform.kill()
    assert platform.returncode == 0, log_path.read_text()[-3000:]
    time.sleep(0.5)
