"""The baseline: bare Celery writing the same inbox row the platform writes, and nothing else.

Celery's defaults (early acks, prefetch 4, no result backend, no task events),
JSON, the database connection kept across tasks, a prefork pool. Events go
through one exchange to one queue per subscriber, as the platform's do; commands
to one queue. ``celery -A bench.bare_celery worker -Q <queue>``.

On RabbitMQ the events' exchange is a fanout exchange. On Redis it is kombu's
``direct`` exchange with both queues bound by the same key, which pushes a copy
into each queue's list: kombu's ``fanout`` there is Redis pub/sub, which keeps
nothing for a subscriber that is not listening, so it is no baseline for a
durable bus (the platform's transport copies the same way).
"""

import os
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

import django  # noqa: E402

django.setup()

from celery import Celery  # noqa: E402
from django.conf import settings  # noqa: E402
from kombu import Exchange, Queue  # noqa: E402

from messaging.models import InboxMessage  # noqa: E402

ON_REDIS = settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
EVENTS_EXCHANGE = Exchange("bench.bare.events", type="direct" if ON_REDIS else "fanout", durable=True)
COMMANDS_QUEUE = "bench.bare.commands"
#: The two subscribers of the bare events, as basket and ordering are the platform's.
SUBSCRIBERS = ("basket", "ordering")
TASK_NAME = "bench.bare.record"


def event_queue(subscriber: str) -> str:
    return f"bench.bare.{subscriber}"


app = Celery("bare", broker=settings.CELERY_BROKER_URL, set_as_current=False)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_queues=[
        *(Queue(event_queue(s), exchange=EVENTS_EXCHANGE, routing_key="record", durable=True) for s in SUBSCRIBERS),
        Queue(COMMANDS_QUEUE, routing_key=COMMANDS_QUEUE, durable=True),
    ],
    worker_hijack_root_logger=False,
)
# As the platform's workers: keep the database connection across tasks.
app.conf.CELERY_DB_REUSE_MAX = 1000


@app.task(name=TASK_NAME, bind=True)
def record(task, message_id: str) -> None:
    """One ORM insert: the inbox row, keyed on the message and this worker."""
    message_id = uuid.UUID(message_id)
    InboxMessage.objects.create(
        message_id=message_id, consumer=task.request.hostname, message_type=TASK_NAME, correlation_id=message_id
    )


def send_events(ids: list[str]) -> None:
    """Publish one task per id to the fanout exchange (both subscribers get it)."""
    with app.producer_or_acquire() as producer:
        for message_id in ids:
            app.send_task(TASK_NAME, args=[message_id], task_id=message_id, exchange=EVENTS_EXCHANGE,
                          routing_key="record", producer=producer)


def send_commands(ids: list[str]) -> None:
    with app.producer_or_acquire() as producer:
        for message_id in ids:
            app.send_task(TASK_NAME, args=[message_id], task_id=message_id, queue=COMMANDS_QUEUE,
                          producer=producer)
