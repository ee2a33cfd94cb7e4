"""The second baseline: the platform's guarantees written by hand on bare Celery.

What a careful team would write without the platform, for the same two
subscribers of a price change: late acks, a prefetch of one and a killed
worker's message given back (``task_acks_late``, ``task_reject_on_worker_lost``),
a task that inserts its inbox row (``ON CONFLICT DO NOTHING``) and does the same
ORM write as the platform's handler, in one transaction, django-celery-results
storing each result (its own ``django-db`` backend) and task events on for
Flower. No outbox, no relay, no dead letters, no contract validation: the sender
publishes straight to the broker. ``celery -A bench.guarded_celery worker -E -Q <queue>``.

The broker objects mirror ``bench.bare_celery``'s (a fanout exchange on RabbitMQ;
on Redis kombu's ``direct`` one, both queues bound by one key).
"""

import uuid
from decimal import Decimal

# First: it sets Django up, as the module a Celery worker is started with (-A) must.
from bench.bare_celery import ON_REDIS, SUBSCRIBERS  # isort: skip

from celery import Celery  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from kombu import Exchange, Queue  # noqa: E402

from apps.basket.services import basket_reprice  # noqa: E402
from apps.ordering.services import price_list_update  # noqa: E402
from messaging.models import InboxMessage  # noqa: E402

EVENTS_EXCHANGE = Exchange("bench.guarded.events", type="direct" if ON_REDIS else "fanout", durable=True)
TASK_NAME = "bench.guarded.apply_price_change"
#: The same write as each platform subscriber's handler of ProductPriceChanged.
WRITES = {
    "basket": lambda sku, price, version: basket_reprice(sku=sku, new_price=price, price_version=version),
    "ordering": lambda sku, price, version: price_list_update(sku=sku, price=price, price_version=version),
}
_CLAIM = (f"INSERT INTO {InboxMessage._meta.db_table} (message_id, consumer, message_type, correlation_id, handled_at) "
          "VALUES (%s, %s, %s, %s, now()) ON CONFLICT DO NOTHING RETURNING 1")


def event_queue(subscriber: str) -> str:
    return f"bench.guarded.{subscriber}"


app = Celery("guarded", broker=settings.CELERY_BROKER_URL, set_as_current=False)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    result_accept_content=["json"],
    result_backend="django-db",
    result_extended=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_queues=[Queue(event_queue(s), exchange=EVENTS_EXCHANGE, routing_key="price", durable=True)
                 for s in SUBSCRIBERS],
    worker_hijack_root_logger=False,
)
# As the platform's workers: keep the database connection across tasks.
app.conf.CELERY_DB_REUSE_MAX = 1000


@app.task(name=TASK_NAME, bind=True)
def apply_price_change(task, message_id: str, sku: str, new_price: str, price_version: int) -> bool:
    """The inbox row and the subscriber's write, once per message: False for a duplicate."""
    subscriber = task.request.hostname.split("@")[0].removeprefix("guarded-")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CLAIM, [uuid.UUID(message_id), task.request.hostname, TASK_NAME, uuid.UUID(message_id)])
        if cursor.fetchone() is None:
            return False
        WRITES[subscriber](sku, Decimal(new_price), price_version)
    return True


def send_price_changes(changes: list[tuple[str, str, str, int]]) -> None:
    """Publish one task per (message id, sku, new price, price version) to both subscribers."""
    with app.producer_or_acquire() as producer:
        for message_id, sku, new_price, price_version in changes:
            app.send_task(TASK_NAME, args=[message_id, sku, new_price, price_version], task_id=message_id,
                          exchange=EVENTS_EXCHANGE, routing_key="price", producer=producer)
