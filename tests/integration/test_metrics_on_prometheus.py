"""The bus's metrics as a real Prometheus scrapes them: the platform's processes on RabbitMQ
and PostgreSQL record into one metrics folder, gunicorn serves ``/metrics`` from it behind
the scrape token, and Prometheus (Debian's ``/usr/bin/prometheus``) scrapes it every second.
What its query API answers is what happened: events handled by both subscribers, whichever
path (alone or in a batch) each delivery took, a handler that fails for good counted and
its dead letter open, every row published counted, every worker and the relay alive."""

import json
import secrets
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import transaction

from apps.catalog.messages import ProductPriceChanged, StockReserved
from messaging.models import OutboxMessage
from tests.integration.conftest import ROOT
from tests.integration.redis import _free_port
from tests.polling import wait_for
from tests.senders import publish

pytestmark = pytest.mark.integration

PROMETHEUS = "/usr/bin/prometheus"
CONTEXTS = ("basket", "catalog", "ordering", "payment")
#: Price changes published: basket and ordering each handle every one.
PRICE_CHANGES = 20
#: The handler that fails for good: ordering has no such order for a StockReserved.
FAILING_CONSUMER = "ordering:catalog.StockReserved"
#: Seconds Prometheus gets to show every number (a scrape a second).
QUERY_TIMEOUT = 60
#: The alert rules a deployment loads (monitoring/README.md).
ALERT_RULES = ROOT / "monitoring" / "prometheus" / "bus-alerts.yml"


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


class Prometheus:
    """A Prometheus of the test's own: its configuration, data and port in ``folder``."""

    def __init__(self, folder, *, target: str, token: str) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        config = folder / "prometheus.yml"
        job = {"scrape_interval": "1s", "scrape_timeout": "1s", "metrics_path": "/metrics",
               "static_configs": [{"targets": [target]}]}
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            # The repository's alert rules, evaluated on what the scrapes bring.
            "rule_files": [str(ALERT_RULES)],
            "scrape_configs": [
                {"job_name": "bus", "authorization": {"credentials": token}, **job},
                {"job_name": "bus-wrong-token", "authorization": {"credentials": "not-the-token"}, **job},
            ],
        }))
        self.log_path = folder / "prometheus.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}"],
                stdout=log, stderr=subprocess.STDOUT)

    def query(self, promql: str) -> dict[tuple, float]:
        """The instant vector of ``promql``, by its labels (sorted pairs, ``__name__`` left out)."""
        status, body = _get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
        if status != 200:
            return {}
        return {tuple(sorted((k, v) for k, v in sample["metric"].items() if k != "__name__")): float(sample["value"][1])
                for sample in json.loads(body)["data"]["result"]}

    def active_alerts(self) -> dict[str, list[dict]]:
        """The labels of each alert pending or firing, by its name."""
        status, body = _get(f"{self.url}/api/v1/alerts")
        active: dict[str, list[dict]] = {}
        for alert in json.loads(body)["data"]["alerts"] if status == 200 else []:
            active.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return active

    def value(self, promql: str) -> float | None:
        """The single value of ``promql``, None while it has none."""
        found = self.query(promql)
        return next(iter(found.values())) if len(found) == 1 else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def metrics_platform(platforms, transactional_db, tmp_path):
    """Every worker and the relay, metrics on into one folder, and gunicorn serving /metrics."""
    token = secrets.token_urlsafe(24)
    processes = platforms.on(
        settings.CELERY_BROKER_URL,
        BUS_METRICS_DIR=str(tmp_path / "metrics"), BUS_METRICS_TOKEN=token,
        # This test's processes alone are counted alive.
        BUS_HEALTH_DIR=str(tmp_path / "health"),
        # One failed attempt, one retry, then the dead letter.
        BUS_MAX_RETRIES="1",
    )
    web = f"127.0.0.1:{_free_port()}"
    # As the Docker image serves it (its PYTHONPATH: the platform folder and the root).
    processes.commands["web"] = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", web,
                                 "--workers", "2", "--pythonpath", f"{ROOT / 'platform'},{ROOT}"]
    processes.start("web")
    try:
        wait_for(lambda: _get(f"http://{web}/metrics", token)[0] == 200, timeout=30,
                 message=f"gunicorn to serve /metrics ({processes['web'].log_path})")
        yield processes, web, token
    finally:
        platforms.stop()  # its environment is this test's alone: the next test starts its own


@pytest.fixture
def prometheus(metrics_platform, tmp_path):
    _, web, token = metrics_platform
    server = Prometheus(tmp_path, target=web, token=token)
    try:
        yield server
    finally:
        server.stop()


def _until(prometheus: Prometheus, what: str, check) -> None:
    """Wait until ``check()`` holds on what Prometheus answers, or fail saying ``what``."""
    deadline = time.monotonic() + QUERY_TIMEOUT
    while not check():
        if prometheus.process.poll() is not None:
            pytest.fail(f"Prometheus exited:\n{prometheus.log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus never showed {what}")
        time.sleep(0.5)


def test_prometheus_scrapes_what_the_bus_did_from_every_process(metrics_platform, prometheus):
    # given: price changes both basket and ordering handle, and an event ordering fails on for good
    with transaction.atomic():
        for n in range(PRICE_CHANGES):
            publish(ProductPriceChanged(sku=f"METRICS-{n}", old_price=Decimal("1.00"), new_price=Decimal("2.00"),
                                        price_version=1, currency="EUR"))
        publish(StockReserved(order_id=uuid.uuid4()))

    # then Prometheus, scraping with the token, sees each delivery once, whichever path it took,
    def handled(context: str) -> float | None:
        return prometheus.value(f'sum(bus_deliveries_total{{context="{context}",outcome="handled"}})')

    _until(prometheus, f"{PRICE_CHANGES} deliveries handled by basket and by ordering",
           lambda: handled("basket") == PRICE_CHANGES and handled("ordering") == PRICE_CHANGES)
    # the failing handler's delivery retried, then dead-lettered and its dead letter open,
    _until(prometheus, "the dead letter", lambda: prometheus.value(
        f'bus_dead_letters_open{{consumer="{FAILING_CONSUMER}"}}') == 1)
    _until(prometheus, "the dead-lettered delivery", lambda: prometheus.value(
        'sum(bus_deliveries_total{context="ordering",message_type="catalog.StockReserved",outcome="dead_lettered"})'
    ) == 1)
    assert prometheus.value('sum(bus_deliveries_total{context="ordering",outcome="retried"})') >= 1
    # each handler's runs timed,
    assert prometheus.value(
        'sum(bus_handler_duration_seconds_count{consumer="basket:catalog.ProductPriceChanged"})') == PRICE_CHANGES
    # every outbox row counted published as the relay marked it, and nothing left due,
    published = OutboxMessage.objects.filter(published_at__isnull=False).count()
    assert published == PRICE_CHANGES + 1
    _until(prometheus, f"{published} rows published", lambda: prometheus.value(
        "sum(bus_published_messages_total)") == published)
    assert prometheus.value("sum(bus_relay_batch_size_sum)") == published
    assert prometheus.value("sum(bus_relay_confirm_wait_seconds_count)") >= 1
    _until(prometheus, "an empty outbox", lambda: prometheus.value("bus_outbox_due_messages") == 0)
    # a worker alive for each context, the relay alive, and the queues' depths,
    assert prometheus.query("bus_workers_alive") == {(("context", c), ("instance", _instance(prometheus)),
                                                      ("job", "bus")): 1.0 for c in CONTEXTS}
    assert prometheus.value("bus_relays_alive") == 1
    assert prometheus.value('count(bus_queue_messages{queue="basket.events.catalog.ProductPriceChanged"})') == 1
    # and a scraper with another token gets nothing.
    assert prometheus.value('up{job="bus"}') == 1
    _until(prometheus, "the wrong token's scrapes refused", lambda: prometheus.value('up{job="bus-wrong-token"}') == 0)
    # The repository's alert rules, on these series: the dead letter's alert and the failing
    # scrape's are raised (pending until their `for`), and no liveness alert is.
    def raised() -> dict[str, list[dict]]:
        alerts = prometheus.active_alerts()
        return alerts if {"BusDeadLettersOpen", "BusScrapeFailing"} <= set(alerts) else {}

    _until(prometheus, "the dead letter's and the failing scrape's alerts", raised)
    alerts = prometheus.active_alerts()
    assert [labels["consumer"] for labels in alerts["BusDeadLettersOpen"]] == [FAILING_CONSUMER]
    assert [labels["job"] for labels in alerts["BusScrapeFailing"]] == ["bus-wrong-token"]
    assert not {"BusContextWithoutWorker", "BusNoRelayAlive", "BusLivenessMetricsAbsent",
                "BusOutboxMessagesOld"} & set(alerts)


def _instance(prometheus: Prometheus) -> str:
    [labels] = prometheus.query('up{job="bus"}')
    return dict(labels)["instance"]
