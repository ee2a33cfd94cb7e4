"""``/metrics``: the bus in Prometheus' text format, for a scraper that sends the token.

One scrape answers what every process of this host recorded (the files in
``BUS_METRICS_DIR``, ``messaging.metrics``) and the bus's state read once, by the
process serving the scrape, from the database, the liveness files and the broker
(``messaging.bus_state``). Without ``BUS_METRICS_TOKEN`` there is no endpoint (404);
a request without that token as its bearer token gets 401, whatever else it carries.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from messaging import bus_state


class BusStateCollector:
    """The bus's state as gauges, read at each scrape (a prometheus_client custom collector)."""

    def collect(self):
        now = timezone.now()
        backlog = bus_state.outbox_backlog(now)
        yield GaugeMetricFamily("bus_outbox_due_messages", "Outbox rows unpublished and due now.", value=backlog.due)
        yield GaugeMetricFamily("bus_outbox_oldest_due_age_seconds",
                                "Seconds the oldest due outbox row has waited (0 when none).",
                                value=backlog.oldest_due_age(now))
        dead_letters = GaugeMetricFamily("bus_dead_letters_open", "Open dead letters (neither retried nor discarded).",
                                         labels=["context", "consumer"])
        for row in bus_state.dead_letters_by_consumer():
            dead_letters.add_metric([row["context"], row["consumer"]], row["count"])
        yield dead_letters
        workers = GaugeMetricFamily("bus_workers_alive", "Running worker processes of each context on this host.",
                                    labels=["context"])
        for context, alive in bus_state.workers_alive().items():
            workers.add_metric([context], alive)
        yield workers
        yield GaugeMetricFamily("bus_relays_alive", "Running relay processes on this host.",
                                value=bus_state.relays_alive())
        depths = bus_state.queue_depths()
        if depths is not None:  # the broker did not answer in time: no number rather than a wrong one
            queues = GaugeMetricFamily("bus_queue_messages", "Messages each bus queue holds.", labels=["queue"])
            for queue, depth in depths.items():
                queues.add_metric([queue], depth)
            yield queues


def authorized(request: HttpRequest, token: str) -> bool:
    """Whether the request's bearer token is ``token`` (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.BUS_METRICS_TOKEN
    if not token:
        raise Http404("metrics are not served: BUS_METRICS_TOKEN is not set")
    if not authorized(request, token):
        return HttpResponse("a bearer token is required", status=401, content_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    registry = CollectorRegistry()
    folder = Path(settings.BUS_METRICS_DIR) if settings.BUS_METRICS_DIR else None
    if folder is not None and folder.is_dir():  # made by the first process that records
        MultiProcessCollector(registry, path=str(folder))
    registry.register(BusStateCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
