"""The embedded default measured on its own: ``python -m bench.embedded --events N``.

Runs in a process of its own because it needs other settings than the rest of
the bench (filesystem broker and SQLite in ``BUS_DATA_DIR``); prints one JSON
line: handled messages per second and the latency percentiles.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--steady-rate", type=float, default=160.0, help="events a second (two handled each)")
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    options = parser.parse_args()
    options.logs.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from bench.processes import ProcessGroup
    from bench.scenarios import SUBSCRIBERS, ms_since, percentiles, price_changes, wait_for_rows
    from messaging import brokers
    from messaging.models import InboxMessage
    from messaging.outbox import Outbox

    catalog = Outbox.for_context("catalog")
    assert brokers.current().for_trying_only, "run with the embedded default (no CELERY_BROKER_URL)"
    call_command("migrate", verbosity=0)
    with ProcessGroup(dict(os.environ), options.logs) as group:
        for context in SUBSCRIBERS:
            group.start_worker(context, concurrency=2)
        group.start_relay()
        group.wait_ready()

        with transaction.atomic():
            catalog.publish_many(price_changes(options.events))
        started = time.monotonic()
        finished = wait_for_rows(2 * options.events)
        figures = {"platform": 2 * options.events / (finished - started)}

        InboxMessage.objects.all().delete()
        rate, count = 10, 20
        sent_at, events = {}, price_changes(count, prefix="LATENCY")
        began = time.monotonic()
        for i, event in enumerate(events):
            time.sleep(max(0.0, began + i / rate - time.monotonic()))
            with transaction.atomic():
                envelope = catalog.publish(event)
            sent_at[str(envelope.id)] = time.time()
        wait_for_rows(2 * count)
        figures.update(percentiles(
            [ms_since(row.handled_at, sent_at[str(row.message_id)]) for row in InboxMessage.objects.all()],
            "platform.latency",
        ))
        figures.update(steady(catalog, options.steady_rate, options.steady_seconds))
    print(json.dumps(figures))


def steady(catalog, rate: float, seconds: float) -> dict:
    """Events published one per transaction at ``rate`` a second for ``seconds``, as an
    application would; what the subscribers kept up with (not a burst: issue 18's target)."""
    from django.db import transaction

    from bench.scenarios import price_changes, wait_for_rows
    from messaging.models import InboxMessage

    InboxMessage.objects.all().delete()
    count = int(rate * seconds)
    events = price_changes(count, prefix="STEADY")
    began = time.monotonic()
    for i, event in enumerate(events):
        time.sleep(max(0.0, began + i / rate - time.monotonic()))
        with transaction.atomic():
            catalog.publish(event)
    published = time.monotonic()
    handled_meanwhile = InboxMessage.objects.count()
    finished = wait_for_rows(2 * count)
    return {
        # Handled messages a second offered (two subscribers per event) and handled, first
        # publish to last handled: equal when the workers keep up.
        "steady.offered": 2 * count / (published - began),
        "steady.platform": 2 * count / (finished - began),
        # What was still waiting when publishing stopped, and how long it took to drain.
        "steady.backlog": 2 * count - handled_meanwhile,
        "steady.drain_seconds": finished - published,
    }


if __name__ == "__main__":
    main()
