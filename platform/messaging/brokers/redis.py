"""Redis: lists for queues, with the bus's own fan-out, delivery limit and dead letters.

kombu's Redis transport keeps each queue in a list, hands messages out with
BRPOP and emulates acks: a taken message waits in the ``unacked`` hash until
it is acked, and one left there longer than ``visibility_timeout`` (its
worker died) goes back to its queue. The transport here (``Transport``,
``CELERY_BROKER_TRANSPORT``) adds what RabbitMQ gives the bus and kombu's
does not:

- **Fan-out without pub/sub.** An event's exchange is a ``direct`` exchange
  that every subscriber's queue is bound to with the event's type, and a
  publish writes one copy into each bound queue, durably: a subscriber that
  was down finds every event in its list when it returns. (kombu's ``fanout``
  exchange is Redis pub/sub, which drops what nobody listens to at that
  instant.) Each copy gets a delivery tag of its own and is routed to its
  queue alone. kombu gives the copies one tag: with two subscribers holding
  copies, one's ack removed the other's from ``unacked``, and a crash of the
  other then lost it. A restored copy goes back to its own queue only.
- **Unroutable is reported.** A publish that finds no bound queue returns no
  queue (kombu's drops it with a warning); the relay then keeps the row.
- **A delivery limit.** Each hand-out of a message (the same tag each time it
  comes back) is counted in Redis, beside the ``unacked`` entry, in the same
  round trip. Past ``BUS_DELIVERY_LIMIT`` redeliveries it goes to the
  dead-letter queue instead of to a worker, as a quorum queue does.
- **A dead-letter queue.** A rejected message (``requeue=False``: Celery's
  reject of a failed task, the worker's when the dead-letter table cannot be
  written) moves, in one transaction, from ``unacked`` into the
  ``dead-letters`` list, with an ``x-death`` header naming its queue and the
  reason, as RabbitMQ's are; kombu's would delete it. The relay moves that
  list into the dead-letter table, as on RabbitMQ.

A publish counts once Redis has answered it (the relay marks a row only
then); with ``appendonly yes`` Redis writes each command to its AOF before
answering, and ``appendfsync everysec`` fsyncs that file every second: a
killed ``redis-server`` loses nothing, a machine that loses power loses up to
a second of answered writes (README, "Choosing a broker").

Retries wait in the worker (a Celery countdown) and go back to the failing
consumer's queue alone, so ``visibility_timeout`` must exceed the longest a
worker holds a message: the task time limit plus the longest retry wait
(``messaging.checks``).
"""

from __future__ import annotations

import contextlib
import time
import uuid

from django.conf import settings
from django.core import checks
from kombu import Queue
from kombu.exceptions import ChannelError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from messaging.brokers.base import DEAD_LETTER_QUEUE, BatchOutcome, Broker, Outgoing, ReplyConfirmedPublisher

#: Redis keys of the delivery counts, one per delivery tag.
DELIVERIES_KEY = "bus.deliveries.{tag}"


class QoS(kombu_redis.QoS):
    """kombu's ack emulation, plus a count of each message's deliveries and a
    reject that dead-letters instead of deleting."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: Deliveries of each message this channel holds, counted as it was handed out.
        self.deliveries: dict[str, int] = {}

    def append(self, message, delivery_tag) -> None:
        # kombu's append (the unacked entry and its index), with the count in the same pipeline.
        delivery = message.delivery_info
        counter = DELIVERIES_KEY.format(tag=delivery_tag)
        with self.pipe_or_acquire() as pipe:
            replies = (
                pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
                .hset(self.unacked_key, delivery_tag,
                      dumps([message._raw, delivery["exchange"], delivery["routing_key"]]))
                .incr(counter)
                .expire(counter, self.channel.deliveries_ttl)
                .execute()
            )
        virtual.QoS.append(self, message, delivery_tag)
        self.deliveries[delivery_tag] = replies[2]

    def over_delivery_limit(self, delivery_tag) -> bool:
        """Whether the message was handed out more often than the limit allows:
        the first delivery and ``BUS_DELIVERY_LIMIT`` redeliveries."""
        return self.deliveries.get(delivery_tag, 0) > settings.BUS_DELIVERY_LIMIT + 1

    def ack(self, delivery_tag) -> None:
        self._remove_from_indices(delivery_tag).delete(DELIVERIES_KEY.format(tag=delivery_tag)).execute()
        self._forget(delivery_tag)

    def reject(self, delivery_tag, requeue=False) -> None:
        if requeue:
            # Back to its queue, counted again when it is handed out next.
            self.restore_by_tag(delivery_tag, leftmost=True)
            self._forget(delivery_tag)
        else:
            self.dead_letter(delivery_tag, reason="rejected")

    def dead_letter(self, delivery_tag, *, reason: str) -> None:
        """Move the message from ``unacked`` into the dead-letter queue, in one transaction."""

        def move(pipe):
            raw = pipe.hget(self.unacked_key, delivery_tag)
            pipe.multi()
            self._remove_from_indices(delivery_tag, pipe)
            pipe.delete(DELIVERIES_KEY.format(tag=delivery_tag))
            if raw:
                payload, exchange, routing_key = loads(bytes_to_str(raw))
                pipe.lpush(DEAD_LETTER_QUEUE, dumps(self.channel.dead_lettered(payload, exchange, routing_key, reason)))

        with self.channel.conn_or_acquire() as client:
            client.transaction(move, self.unacked_key)
        self._forget(delivery_tag)

    def _forget(self, delivery_tag) -> None:
        self.deliveries.pop(delivery_tag, None)
        virtual.QoS.ack(self, delivery_tag)  # the channel's own bookkeeping (prefetch)


def _copy_to_route(message: dict) -> dict:
    """A copy of a prepared message that routing may change without touching the original:
    kombu sets its body's encoding, its delivery tag and its delivery info in place."""
    properties = message["properties"]
    return {**message, "properties": {**properties, "delivery_info": dict(properties["delivery_info"])}}


class Channel(kombu_redis.Channel):
    QoS = QoS

    #: Each exchange's bindings as read during one publish batch (``bindings_read_once``).
    _tables: dict | None = None

    @contextlib.contextmanager
    def bindings_read_once(self):
        """Read each exchange's bindings once for the messages published in this block
        (one round trip per exchange, not per message), as they were when first read."""
        self._tables = {}
        try:
            yield
        finally:
            self._tables = None

    def get_table(self, exchange):
        if self._tables is None:
            return super().get_table(exchange)
        if exchange not in self._tables:
            self._tables[exchange] = super().get_table(exchange)
        return self._tables[exchange]

    @property
    def deliveries_ttl(self) -> int:
        """Seconds a delivery count is kept: longer than the message can keep coming back
        (a visibility timeout per redelivery), so a count never restarts at zero."""
        return int(self.visibility_timeout * (settings.BUS_DELIVERY_LIMIT + 2))

    def basic_publish(self, message, exchange, routing_key, **kwargs):
        """Publish a copy to each queue bound to the route; return the queues (none: unroutable)."""
        if not exchange or self.typeof(exchange).type == "fanout":
            # The default exchange names its queue; fanout is Celery's own traffic
            # (task events, remote control), which is pub/sub by design.
            super().basic_publish(message, exchange, routing_key, **kwargs)
            return [routing_key] if not exchange else None
        queues = sorted(self.typeof(exchange).lookup(self.get_table(exchange), exchange, routing_key, None))
        for queue in queues:
            # Routed to its queue alone, with a delivery tag of its own (basic_publish gives one).
            super().basic_publish(_copy_to_route(message), "", queue, **kwargs)
        return queues

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        def deliver(message):
            if not no_ack and self.qos.over_delivery_limit(message.delivery_tag):
                self.qos.dead_letter(message.delivery_tag, reason="delivery_limit")
                return None
            return callback(message)

        return super().basic_consume(queue, no_ack, deliver, consumer_tag, **kwargs)

    def basic_get(self, queue, no_ack=False, **kwargs):
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and not no_ack and self.qos.over_delivery_limit(message.delivery_tag):
            self.qos.dead_letter(message.delivery_tag, reason="delivery_limit")
            return None
        return message

    def dead_lettered(self, payload: dict, exchange: str, routing_key: str, reason: str) -> dict:
        """The message as the dead-letter queue keeps it: RabbitMQ's ``x-death`` header
        (newest first) says which queue gave up on it and why."""
        queue = routing_key if not exchange else next(iter(self._lookup(exchange, routing_key)), routing_key)
        payload["headers"] = {
            **(payload.get("headers") or {}),
            "x-death": [{"queue": queue, "reason": reason, "count": 1, "time": int(time.time())}],
        }
        properties = payload.setdefault("properties", {})
        properties["delivery_tag"] = str(uuid.uuid4())
        properties["delivery_info"] = {"exchange": "", "routing_key": DEAD_LETTER_QUEUE}
        return payload


class RedisPublisher(ReplyConfirmedPublisher):
    """A batch as one pipeline, the bindings of its events' exchanges read once."""

    def publish(self, messages: list[Outgoing]) -> BatchOutcome:
        with self.channel.bindings_read_once():
            return super().publish(messages)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the bus's fan-out, delivery limit and dead letters
    (``CELERY_BROKER_TRANSPORT``)."""

    Channel = Channel


class Redis(Broker):
    label = "Redis"
    transport = "messaging.brokers.redis:Transport"
    #: A direct exchange with every subscriber bound by the event's type: one copy per
    #: queue, durably (never kombu's fanout, which is pub/sub on Redis).
    event_exchange_type = "direct"

    def publisher(self, channel, *, timeout: float) -> RedisPublisher:
        return RedisPublisher(channel, timeout=timeout)

    def redelivery_wait(self) -> float:
        return float(settings.BUS_REDIS_VISIBILITY_TIMEOUT)

    def configuration_problems(self) -> list:
        # A worker may hold a message for a retry's wait and then its run. Held longer
        # than the visibility timeout, Redis gives it to another worker meanwhile.
        longest_hold = settings.CELERY_TASK_TIME_LIMIT + settings.BUS_RETRY_BACKOFF_MAX
        floor = max(2 * settings.CELERY_TASK_TIME_LIMIT, longest_hold)
        if settings.BUS_REDIS_VISIBILITY_TIMEOUT >= floor:
            return []
        return [checks.Error(
            f"BUS_REDIS_VISIBILITY_TIMEOUT ({settings.BUS_REDIS_VISIBILITY_TIMEOUT} s) is shorter than "
            f"a worker may hold a message on Redis ({floor:g} s: twice CELERY_TASK_TIME_LIMIT, and at least "
            "CELERY_TASK_TIME_LIMIT plus BUS_RETRY_BACKOFF_MAX): Redis would hand a message still being "
            "handled, or waiting for its retry, to a second worker.",
            hint=f"Set BUS_REDIS_VISIBILITY_TIMEOUT to {floor:g} or more, or lower CELERY_TASK_TIME_LIMIT "
                 "or BUS_RETRY_BACKOFF_MAX.",
            id="messaging.E011",
        )]

    def transport_options(self) -> dict:
        visibility_timeout = settings.BUS_REDIS_VISIBILITY_TIMEOUT
        return {
            "visibility_timeout": visibility_timeout,
            # A dead worker's messages go back within a tenth of the timeout after it ends.
            "unacked_restore_interval": max(1, min(10, visibility_timeout // 10)),
            "unacked_restore_throttle": 1,
            # The lock a sweep holds; a worker killed while holding it (kombu's default: 5
            # minutes) stopped every sweep for that long.
            "unacked_mutex_expire": max(10, visibility_timeout // 10),
            # A broker gone without closing the connection shows up within seconds.
            "socket_keepalive": True,
            "health_check_interval": 25,
            "socket_timeout": settings.BUS_CONFIRM_TIMEOUT,
            "socket_connect_timeout": settings.BUS_CONFIRM_TIMEOUT,
        }

    def queue_depths(self, channel, names: list[str]) -> dict[str, int]:
        """Messages waiting in each queue and those taken but not acked yet: a
        killed worker's stay in ``unacked`` until the visibility timeout returns them."""
        depths = {name: self._queue_depth(channel, name) for name in names}
        with channel.conn_or_acquire() as client:
            for entry in client.hvals(channel.unacked_key):
                _, exchange, routing_key = loads(bytes_to_str(entry))
                if not exchange and routing_key in depths:
                    depths[routing_key] += 1
        return depths

    def _queue_depth(self, channel, name: str) -> int:
        try:
            return super()._queue_depth(channel, name)
        except ChannelError:
            return 0

    def dead_letter_queue(self) -> Queue:
        return Queue(DEAD_LETTER_QUEUE, exchange="", routing_key=DEAD_LETTER_QUEUE, durable=True)

    def own_queues(self) -> list[Queue]:
        return [self.dead_letter_queue()]
