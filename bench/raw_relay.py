"""The relay's baseline: the loop a person would write by hand, with the broker's client and SQL.

``SKIP LOCKED`` a batch of rows, put them all on the broker, mark them in one
UPDATE once the broker has them. On RabbitMQ (py-amqp): publish on a channel in
confirm mode and wait for the confirms. On Redis (redis-py): one pipeline of
``XADD``s, a copy into each queue's stream bound to the row's route (as the
bus's Redis transport stores a message), answered together. The same Celery task message
(body, headers) as the platform's relay puts on the broker.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid

import amqp
import redis
from django.db import connection, transaction
from kombu.transport.redis import Channel as KombuRedisChannel
from kombu.utils.url import url_to_parts

from messaging.models import OutboxMessage

#: Celery's task message body after [args, kwargs]: no callbacks, no chain.
EMBED = ', {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
TABLE = OutboxMessage._meta.db_table


def for_url(broker_url: str) -> AmqpLoop | RedisLoop:
    """The hand-written loop for the broker at ``broker_url``, connected."""
    if urllib.parse.urlsplit(broker_url).scheme.startswith("redis"):
        return RedisLoop(broker_url)
    return AmqpLoop(broker_url)


def _claim(cursor, batch_size: int) -> list[tuple]:
    cursor.execute(
        f"SELECT id, message_id::text, kind, message_type, correlation_id::text, envelope::text FROM {TABLE} "
        "WHERE published_at IS NULL AND available_at <= statement_timestamp() "
        "ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED", [batch_size])
    return cursor.fetchall()


def _mark(cursor, rows: list[tuple]) -> None:
    cursor.execute(f"UPDATE {TABLE} SET published_at = now() WHERE id = ANY(%s)", [[r[0] for r in rows]])


def _body(envelope: str) -> str:
    return '[[], {"envelope": ' + envelope + "}" + EMBED


def _headers(message_type: str, message_id: str) -> dict:
    return {"lang": "py", "task": message_type, "id": message_id, "root_id": message_id,
            "retries": 0, "argsrepr": "()", "kwargsrepr": "{}"}


def _route(kind: str, message_type: str) -> tuple[str, str]:
    return ("commands", message_type) if kind == "command" else (f"events.{message_type}", message_type)


class AmqpLoop:
    def __init__(self, broker_url: str) -> None:
        transport, host, port, user, password, vhost, _ = url_to_parts(broker_url)
        self.conn = amqp.Connection(host=f"{host}:{port or 5672}", userid=user, password=password,
                                    virtual_host=vhost or "/")
        self.conn.connect()

    def drain(self, *, batch_size: int = 500, timeout: float = 10.0) -> int:
        """Publish every unpublished row; return how many."""
        channel = self.conn.channel()
        channel.confirm_select()
        unconfirmed: set[int] = set()

        def on_ack(tag, multiple):
            unconfirmed.difference_update([t for t in unconfirmed if t <= tag] if multiple else [tag])

        channel.events["basic_ack"].add(on_ack)
        tag, total = 0, 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                rows = _claim(cursor, batch_size)
                if not rows:
                    channel.close()
                    return total
                for _, message_id, kind, message_type, conversation_id, envelope in rows:
                    exchange, key = _route(kind, message_type)
                    channel.basic_publish(amqp.Message(
                        _body(envelope), content_type="application/json", content_encoding="utf-8",
                        delivery_mode=2, application_headers=_headers(message_type, message_id),
                        correlation_id=conversation_id,  # as the platform's relay: the conversation
                    ), exchange=exchange, routing_key=key)
                    tag += 1
                    unconfirmed.add(tag)
                deadline = time.monotonic() + timeout
                while unconfirmed:
                    self.conn.drain_events(timeout=max(0.01, deadline - time.monotonic()))
                _mark(cursor, rows)
                total += len(rows)

    def close(self) -> None:
        self.conn.close()


class RedisLoop:
    #: Where kombu keeps an exchange's bindings, and how it joins a binding's fields.
    BINDINGS_KEY, SEPARATOR = KombuRedisChannel.keyprefix_queue, KombuRedisChannel.sep

    def __init__(self, broker_url: str) -> None:
        self.client = redis.Redis.from_url(broker_url)

    def _bound_queues(self, exchange: str, routing_key: str) -> list[str]:
        bindings = (member.decode().split(self.SEPARATOR) for member in self.client.smembers(self.BINDINGS_KEY % exchange))
        return sorted(queue for key, _, queue in bindings if key == routing_key)

    def drain(self, *, batch_size: int = 500) -> int:
        """Publish every unpublished row; return how many."""
        total = 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                rows = _claim(cursor, batch_size)
                if not rows:
                    return total
                queues: dict[tuple[str, str], list[str]] = {}  # each route's bindings, read once a batch
                pipe = self.client.pipeline(transaction=False)
                for _, message_id, kind, message_type, conversation_id, envelope in rows:
                    route = _route(kind, message_type)
                    if route not in queues:
                        queues[route] = self._bound_queues(*route)
                    body = base64.b64encode(_body(envelope).encode()).decode()
                    for queue in queues[route]:
                        pipe.xadd(queue, {"handouts": 0, "payload": json.dumps({
                            "body": body, "content-encoding": "utf-8", "content-type": "application/json",
                            "headers": _headers(message_type, message_id),
                            "properties": {"correlation_id": conversation_id, "delivery_mode": 2, "priority": 0,
                                           "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
                                           "delivery_info": {"exchange": "", "routing_key": queue}},
                        })})
                pipe.execute()
                _mark(cursor, rows)
                total += len(rows)

    def close(self) -> None:
        self.client.close()
