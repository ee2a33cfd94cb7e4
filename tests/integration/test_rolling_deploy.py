"""A contract change deployed as teams deploy: one process at a time, while messages flow.

Two releases of the code run side by side against one broker and one PostgreSQL:
the release before ``catalog.ProductPriceChanged`` version 2 (this checkout with
``rolling_deploy/before_currency.patch`` applied: version 1, no currency) and this
one (version 2, a required ISO 4217 currency, version 1 upcast). The database is
migrated first, as a deploy does. Prices change all along, published by a process
of one release or the other; the publisher, the relay and each subscriber's worker
(basket, ordering) are replaced one at a time, the new one started before the old
one stops, in both orders:

- publishers first: version 2 reaches workers of the release before, which hold it
  back for their new siblings (``messaging.delivery.NewerVersionError``);
- consumers first: the new workers read the old publisher's version 1 through the
  upcaster.

Either way: no dead letter, every price change handled exactly once by each
subscriber, and ordering's price list ends where the catalog is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from apps.catalog.models import Product
from apps.ordering.models import PriceListEntry
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from tests.integration.conftest import (
    ROOT,
    PlatformProcesses,
    _platform_env,
    _purge_bus_queues,
)
from tests.integration import redis
from tests.integration.platform_bus import PlatformBus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BEFORE_PATCH = Path(__file__).parent / "rolling_deploy" / "before_currency.patch"
PRICE_CHANGED = "catalog.ProductPriceChanged"
SUBSCRIBERS = ("basket", "ordering")
#: Seconds each mix of releases runs with prices flowing before the next replacement.
STEP = 3.0
#: What a deploy replaces, in each order.
PUBLISHERS_FIRST = ["publisher", "relay", "worker-basket", "worker-ordering"]
CONSUMERS_FIRST = ["worker-basket", "worker-ordering", "relay", "publisher"]


@pytest.fixture(scope="module")
def release_before(tmp_path_factory) -> Path:
    """This checkout as it was before the contract change: a copy with the change taken out."""
    tree = tmp_path_factory.mktemp("release-before") / "platform"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", "var", "__pycache__", "node_modules", "artifacts", ".cache", "site"))
    applied = subprocess.run(["git", "apply", "-p1", str(BEFORE_PATCH)], cwd=tree, capture_output=True, text=True)
    if applied.returncode:
        pytest.fail(f"{BEFORE_PATCH.name} no longer applies to this checkout: make it again from the "
                    f"files it names (git diff <change> <change>^ -- ...):\n{applied.stderr}")
    return tree


def _commands(skus: list[str]) -> dict[str, list[str]]:
    commands = {"publisher": [sys.executable, "-m", "tests.integration.rolling_deploy.publish_prices", *skus],
                "relay": [sys.executable, "manage.py", "relay"]}
    for context in SUBSCRIBERS:
        commands[f"worker-{context}"] = [sys.executable, "-m", "workers", context, "--concurrency=2",
                                         "--without-gossip", "--without-mingle"]
    return {f"{name}@{release}": command for release in ("before", "after") for name, command in commands.items()}


class Deploy:
    """The processes of both releases; ``replace(name)`` starts this release's, then stops the one before."""

    def __init__(self, processes: PlatformProcesses) -> None:
        self.processes = processes

    def start(self, names: list[str], release: str) -> None:
        for name in names:
            self.processes.start(f"{name}@{release}")
        # The relay says nothing once it publishes: it polls from the start.
        self.processes.wait_until_ready([f"{name}@{release}" for name in names if name != "relay"])

    def replace(self, name: str) -> None:
        self.start([name], "after")
        old = self.processes[f"{name}@before"]
        old.terminate()  # a warm shutdown, as a deploy stops a process
        old.wait(timeout=60)

    def logs(self, release: str) -> str:
        return "".join(p.log_path.read_text() for name, p in self.processes.items() if name.endswith(f"@{release}"))


def _deploy(order: list[str], *, broker_url: str, release_before: Path, logs: Path, **env: str) -> Deploy:
    skus = [f"ROLL-{uuid.uuid4().hex[:6]}-{i}" for i in range(4)]
    for sku in skus:
        Product.objects.create(sku=sku, name=sku, price=Decimal("9.50"), stock_available=10)
    processes = PlatformProcesses(_commands(skus), _platform_env(CELERY_BROKER_URL=broker_url, **env), logs)
    processes.folders = {name: release_before for name in processes.commands if name.endswith("@before")}
    _purge_bus_queues(processes.broker)
    deploy = Deploy(processes)
    try:
        deploy.start(["worker-basket", "worker-ordering", "relay"], "before")
        deploy.start(["publisher"], "before")
        time.sleep(STEP)
        for name in order:
            deploy.replace(name)
            time.sleep(STEP)
        processes["publisher@after"].terminate()
        processes["publisher@after"].wait(timeout=30)
        PlatformBus(processes).run_until_quiet(timeout=120)
    finally:
        processes.stop_all()
    deploy.skus = skus
    return deploy


def _assert_nothing_lost_or_doubled(deploy: Deploy) -> None:
    assert list(DeadLetter.objects.values_list("reason", "error")) == []
    published = OutboxMessage.objects.filter(message_type=PRICE_CHANGED)
    assert published.filter(published_at__isnull=True).count() == 0
    # Both releases published: the old one version 1, the new one version 2.
    versions = {row.envelope["version"] for row in published}
    assert versions == {1, 2}, versions
    ids = set(published.values_list("message_id", flat=True))
    for context in SUBSCRIBERS:
        handled = InboxMessage.objects.filter(consumer=f"{context}:{PRICE_CHANGED}", message_type=PRICE_CHANGED)
        assert set(handled.values_list("message_id", flat=True)) == ids, f"{context} did not handle each once"
    for product in Product.objects.filter(sku__in=deploy.skus):
        entry = PriceListEntry.objects.get(sku=product.sku)
        assert (entry.price, entry.price_version, entry.currency) == (product.price, product.price_version, "EUR")


def _brokers(request) -> tuple[str, dict]:
    if request.param == "redis":
        # A message a stopped worker had taken comes back after the visibility timeout: seconds there.
        return request.getfixturevalue("redis_server").url, redis.PLATFORM_ENV
    from django.conf import settings

    return settings.CELERY_BROKER_URL, {}


@pytest.fixture(params=["rabbitmq", "redis"])
def broker(request, platforms, transactional_db):
    # One relay per test database: the session's processes stop while this one runs its own.
    platforms.stop()
    return _brokers(request)


def test_publishers_first_newer_messages_wait_for_a_worker_that_knows_them(broker, release_before, tmp_path):
    url, env = broker

    deploy = _deploy(PUBLISHERS_FIRST, broker_url=url, release_before=release_before, logs=tmp_path, **env)

    _assert_nothing_lost_or_doubled(deploy)
    # The workers before held version 2 back for their new siblings, and handled none of it.
    assert "version 2 of catalog.ProductPriceChanged is newer than this worker's" in deploy.logs("before")


def test_consumers_first_new_workers_read_the_old_version_through_the_upcaster(broker, release_before, tmp_path):
    url, env = broker

    deploy = _deploy(CONSUMERS_FIRST, broker_url=url, release_before=release_before, logs=tmp_path, **env)

    _assert_nothing_lost_or_doubled(deploy)
    assert "is newer than this worker's" not in deploy.logs("before")
