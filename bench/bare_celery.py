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

``by_hand`` is the other baseline, **the same guarantees by hand**: bare Celery
with late acks (and reject on worker loss), prefetch 1, task events on, each
result stored by django-celery-results, and a task that claims the inbox row
(``INSERT … ON CONFLICT DO NOTHING``) and, if it was new, makes the handler's ORM
write, in one transaction: what the platform promises, written without it, on
queues of its own. ``celery -A bench.bare_celery:by_hand worker -Q <queue>``.
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
from django.db import connection, transaction  # noqa: E402
from kombu import Exchange, Queue  # noqa: E402

from apps.ordering.models import PriceListEntry  # noqa: E402
from messaging.models import InboxMessage  # noqa: E402

ON_REDIS = settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
EVENTS_EXCHANGE = Exchange("bench.bare.events", type="direct" if ON_REDIS else "fanout", durable=True)
COMMANDS_QUEUE = "bench.bare.commands"
#: The two subscribers of the bare events, as basket and ordering are the platform's.
SUBSCRIBERS = ("basket", "ordering")
TASK_NAME = "bench.bare.record"


def event_queue(subscriber: str) -> str:
    return f"bench.bare.{subscriber}"


def _bench_app(name: str, exchange: Exchange, queue_of, commands_queue: str, **conf) -> Celery:
    """A Celery app of the bench's own: JSON, the two subscribers' queues bound to ``exchange``
    and a commands queue, and, as the platform's workers, the database connection kept across tasks."""
    celery_app = Celery(name, broker=settings.CELERY_BROKER_URL, set_as_current=False)
    celery_app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_queues=[
            *(Queue(queue_of(s), exchange=exchange, routing_key="record", durable=True) for s in SUBSCRIBERS),
            Queue(commands_queue, routing_key=commands_queue, durable=True),
        ],
        worker_hijack_root_logger=False,
        **conf,
    )
    celery_app.conf.CELERY_DB_REUSE_MAX = 1000
    return celery_app


app = _bench_app("bare", EVENTS_EXCHANGE, event_queue, COMMANDS_QUEUE, task_ignore_result=True)


@app.task(name=TASK_NAME, bind=True)
def record(task, message_id: str) -> None:
    """One ORM insert: the inbox row, keyed on the message and this worker."""
    message_id = uuid.UUID(message_id)
    InboxMessage.objects.create(
        message_id=message_id, consumer=task.request.hostname, message_type=TASK_NAME, correlation_id=message_id
    )


def _send(celery_app: Celery, task_name: str, ids: list[str], **route) -> None:
    """Publish one task per id, its id the task's, through one producer."""
    with celery_app.producer_or_acquire() as producer:
        for message_id in ids:
            celery_app.send_task(task_name, args=[message_id], task_id=message_id, producer=producer, **route)


def send_events(ids: list[str]) -> None:
    """Publish one task per id to the fanout exchange (both subscribers get it)."""
    _send(app, TASK_NAME, ids, exchange=EVENTS_EXCHANGE, routing_key="record")


def send_commands(ids: list[str]) -> None:
    _send(app, TASK_NAME, ids, queue=COMMANDS_QUEUE)


# -- the same guarantees by hand -------------------------------------------------------------------

BY_HAND_EXCHANGE = Exchange("bench.byhand.events", type="direct" if ON_REDIS else "fanout", durable=True)
BY_HAND_COMMANDS_QUEUE = "bench.byhand.commands"
BY_HAND_TASK = "bench.byhand.record_once"
#: Its workers' names start with this (``bare-`` as well: the CPU tables count them as bare workers).
BY_HAND_WORKER_PREFIX = "bare-byhand-"


def by_hand_event_queue(subscriber: str) -> str:
    return f"bench.byhand.{subscriber}"


by_hand = _bench_app(
    "byhand", BY_HAND_EXCHANGE, by_hand_event_queue, BY_HAND_COMMANDS_QUEUE,
    result_serializer="json",
    result_accept_content=["json"],
    result_backend="django-db",
    result_extended=True,
    task_ignore_result=False,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_send_task_events=True,
)

_CLAIM = (f"INSERT INTO {InboxMessage._meta.db_table} (message_id, consumer, message_type, correlation_id, handled_at) "
          "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (message_id, consumer) DO NOTHING")


@by_hand.task(name=BY_HAND_TASK, bind=True)
def record_once(task, message_id: str) -> None:
    """The inbox row, claimed once per message and worker, and the handler's ORM write, in one transaction."""
    consumer = task.request.hostname
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM, [uuid.UUID(message_id), consumer, BY_HAND_TASK, uuid.UUID(message_id)])
            claimed = cursor.rowcount == 1
        if claimed:  # a redelivery changes nothing twice
            PriceListEntry.objects.create(sku=f"{consumer.split('@')[0]}:{message_id}"[:64], price="12.50",
                                          price_version=1)


def send_events_by_hand(ids: list[str]) -> None:
    _send(by_hand, BY_HAND_TASK, ids, exchange=BY_HAND_EXCHANGE, routing_key="record")


def send_commands_by_hand(ids: list[str]) -> None:
    _send(by_hand, BY_HAND_TASK, ids, queue=BY_HAND_COMMANDS_QUEUE)
