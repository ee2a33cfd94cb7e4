"""``/metrics`` (``messaging.metrics_endpoint``): only for the scrape token, it answers what this
host's processes recorded and the bus's state read at the scrape (``messaging.bus_state``)."""

import base64

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from messaging import bus_state, metrics
from messaging.delivery import consume
from messaging.health import Heartbeat
from messaging.metrics_endpoint import BusStateCollector
from tests.brokers import on_broker
from tests.metrics import metrics_on  # noqa: F401  (a fixture)
from tests.unit.test_delivery import failing_basket_handler, price_changed  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-of-this-test"


@pytest.fixture
def scrape_token(settings):
    settings.BUS_METRICS_TOKEN = TOKEN
    on_broker(settings, "embedded")  # the queue depths from the embedded broker's folders
    return TOKEN


def _samples(families) -> dict[tuple, float]:
    """Each sample of metric families (a scrape's, a collector's) by (name, sorted labels)."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in families for sample in family.samples}


def test_without_a_scrape_token_setting_there_is_no_metrics_endpoint(client, settings):
    settings.BUS_METRICS_TOKEN = ""

    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.parametrize("authorization", [
    None,
    "Bearer wrong-token",
    f"Bearer {TOKEN}-and-more",
    f"Basic {base64.b64encode(f'prometheus:{TOKEN}'.encode()).decode()}",
    TOKEN,
])
def test_a_scrape_without_the_token_as_its_bearer_token_is_refused(client, scrape_token, authorization):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}

    response = client.get("/metrics", **headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"bus_" not in response.content


def test_a_scrape_with_the_token_gets_every_processs_counts_and_the_bus_state(client, scrape_token, metrics_on):
    metrics.recorder.delivered("basket", "catalog.ProductPriceChanged", metrics.HANDLED)

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = _samples(text_string_to_metric_families(response.content.decode()))
    handled = (("context", "basket"), ("message_type", "catalog.ProductPriceChanged"), ("outcome", "handled"))
    assert samples[("bus_deliveries_total", handled)] == 1
    assert samples[("bus_outbox_due_messages", ())] == 0
    assert samples[("bus_relays_alive", ())] == 0


def test_a_scrape_before_any_process_recorded_anything_gets_the_bus_state(client, scrape_token, settings, tmp_path):
    settings.BUS_METRICS_DIR = str(tmp_path / "made-at-the-first-record")

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert ("bus_outbox_due_messages", ()) in _samples(text_string_to_metric_families(response.content.decode()))


def test_the_collector_reads_the_outbox_the_open_dead_letters_and_this_hosts_live_processes(
    scrape_token, price_changed, failing_basket_handler, settings, tmp_path
):
    # given: one due outbox row (price_changed), a dead letter of basket's handler,
    settings.BUS_HEALTH_DIR = tmp_path / "health"
    consume(price_changed, context="basket", last_attempt=True)
    # a live basket worker and relay on this host (this process beats for both)
    Heartbeat("worker-basket").beat("consuming")
    Heartbeat("relay").beat("idle")

    # when the collector is scraped
    samples = _samples(BusStateCollector().collect())

    # then
    assert samples[("bus_outbox_due_messages", ())] == 1
    assert samples[("bus_outbox_oldest_due_age_seconds", ())] >= 0
    assert samples[("bus_dead_letters_open", (("consumer", "basket:catalog.ProductPriceChanged"),
                                              ("context", "basket")))] == 1
    assert samples[("bus_workers_alive", (("context", "basket"),))] == 1
    assert samples[("bus_workers_alive", (("context", "ordering"),))] == 0  # has handlers, no live worker
    assert samples[("bus_relays_alive", ())] == 1
    assert samples[("bus_queue_messages", (("queue", "basket.events.catalog.ProductPriceChanged"),))] >= 0


def test_the_oldest_due_rows_age_is_zero_when_nothing_waits():
    assert bus_state.OutboxBacklog(due=0, scheduled=0, oldest_due_since=None).oldest_due_age(timezone.now()) == 0


def test_a_broker_that_does_not_answer_leaves_the_queue_depths_out_of_the_scrape(scrape_token, monkeypatch):
    def unreachable(**options):
        raise ConnectionRefusedError("nobody listens")

    monkeypatch.setattr(bus_state.brokers.current(), "connection", unreachable)

    assert bus_state.queue_depths() is None
    assert "bus_queue_messages" not in {family.name for family in BusStateCollector().collect()}
