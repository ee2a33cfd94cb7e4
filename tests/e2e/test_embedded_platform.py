"""The README's run command on the embedded default: filesystem broker and
SQLite, every process started by ``manage.py run_platform``, flows complete."""

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
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

    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    basket_add_item(customer_id="alice", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))
    product_change_price(sku="MUG-1", new_price=Decimal("12.50"))
    wait(lambda: BasketLine.objects.filter(unit_price=Decimal("12.50"), previous_unit_price=Decimal("10.00")).exists(),
         "the basket to be repriced")
    wait(lambda: PriceListEntry.objects.filter(sku="MUG-1", price=Decimal("12.50")).exists(), "ordering's price list")
    paid = basket_checkout(customer_id="alice")
    wait(lambda: Order.objects.filter(id=paid, status="paid").exists(), "the order to be paid")
    basket_add_item(customer_id="alice", sku="MUG-1", quantity=9, unit_price=Decimal("12.50"))
    rejected = basket_checkout(customer_id="alice")
    wait(lambda: Order.objects.filter(id=rejected, status="cancelled").exists(), "the order to be cancelled")
    print("FLOWS COMPLETE")
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


def test_run_platform_brings_everything_up_and_the_flows_complete(embedded_env, tmp_path):
    web_port, flower_port = _free_port(), _free_port()
    log_path = tmp_path / "run_platform.log"
    with open(log_path, "w") as log:
        platform = subprocess.Popen(
            [sys.executable, "manage.py", "run_platform", f"--web-port={web_port}", f"--flower-port={flower_port}"],
            cwd=ROOT, env=embedded_env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: log_path.read_text().count(" ready.") >= 4 or platform.poll() is not None,
                 timeout=90, message="four workers ready")
        output = log_path.read_text()
        assert platform.poll() is None, output[-3000:]
        assert "EMBEDDED MODE" in output

        flows = subprocess.run([sys.executable, "manage.py", "shell", "-c", FLOWS], cwd=ROOT, env=embedded_env,
                               capture_output=True, text=True, timeout=180)
        assert "FLOWS COMPLETE" in flows.stdout, flows.stdout + flows.stderr + log_path.read_text()[-3000:]

        flower_login = re.search(r"flower login \(user:password\): (\S+)", output).group(1)
        wait_for(lambda: _get(f"http://127.0.0.1:{web_port}/admin/login/")[0] == 200, message="the admin")
        _, landed_on = _get(f"http://127.0.0.1:{web_port}/admin/messaging/outboxmessage/")
        assert "/admin/login/" in landed_on  # login required
        wait_for(lambda: _get(f"http://127.0.0.1:{flower_port}/", flower_login)[0] == 200, message="Flower")
        assert _get(f"http://127.0.0.1:{flower_port}/")[0] == 401
        assert _get(f"http://127.0.0.1:{flower_port}/metrics")[0] == 401
        assert _get(f"http://127.0.0.1:{flower_port}/metrics", flower_login)[0] == 200
    finally:
        platform.send_signal(signal.SIGTERM)
        try:
            platform.wait(timeout=40)
        except subprocess.TimeoutExpired:
            platform.kill()
    assert platform.returncode == 0, log_path.read_text()[-3000:]
    time.sleep(0.5)
