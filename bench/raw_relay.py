"""The relay's baseline: the loop a person would write by hand, with the broker's client and SQL.

``SKIP LOCKED`` a batch of rows (as many as the relay's, ``BUS_RELAY_BATCH_SIZE``), put
them all on the broker, mark them in one UPDATE once the broker has them. The stored
envelope goes out as the database gives its JSON text (never decoded and encoded again),
inside the same Celery task message (body, headers, properties) as the platform's relay
puts on the broker, its headers made once per message type with only the message's id
filled in. On RabbitMQ (py-amqp): publish mandatory on a channel in confirm mode, then
wait for the batch's confirms (a refused or returned message fails the loop). On Redis
(redis-py): one pipeline of ``XADD``s, a copy into each queue's stream bound to the row's
route (as the bus's Redis transport stores a message), answered together.

What made the first version of this loop slow (≈ 1,700 rows/s where a plain loop reached
≈ 7,000) is in bench/results/relay-fast.md.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.parse
import uuid

import amqp
import redis
from amqp import spec
from django.conf import settings
from django.db import connection, transaction
from kombu.transport.redis import Channel as KombuRedisChannel
from kombu.utils.url import url_to_parts
from messaging.models import OutboxMessage

#: Celery's task message body after [args, kwargs]: no callbacks, no chain.
EMBED = b', {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
TABLE = OutboxMessage._meta.db_table


def for_url(broker_url: str) -> AmqpLoop | RedisLoop:
    """The hand-written loop for the broker at ``broker_url``, connected."""
    if urllib.parse.urlsplit(broker_url).scheme.startswith("redis"):
        return RedisLoop(broker_url)
    return AmqpLoop(broker_url)


def _claim(cursor, batch_size: int) -> list[tuple]:
    cursor.execute(
        f"SELECT id, envelope->>'id', kind, message_type, envelope->>'correlationid', envelope::text FROM {TABLE} "
        "WHERE published_at IS NULL AND available_at <= statement_timestamp() "
        "ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED", [batch_size])
    return cursor.fetchall()


def _mark(cursor, rows: list[tuple]) -> None:
    cursor.execute(f"UPDATE {TABLE} SET published_at = now() WHERE id = ANY(%s)", [[r[0] for r in rows]])


def _body(envelope: str) -> bytes:
    return b'[[], {"envelope": ' + envelope.encode() + b"}" + EMBED


class _Headers:
    """The task headers of each message type, made once; a message's adds its id."""

    def __init__(self) -> None:
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self.ignore_result = settings.CELERY_TASK_IGNORE_RESULT
        self.by_type: dict[str, dict] = {}

    def __call__(self, message_type: str, message_id: str) -> dict:
        template = self.by_type.get(message_type)
        if template is None:
            template = self.by_type[message_type] = {
                "lang": "py", "task": message_type, "retries": 0, "argsrepr": "()", "origin": self.origin,
                "ignore_result": self.ignore_result, "replaced_task_nesting": 0,
            }
        return {**template, "id": message_id, "root_id": message_id,
                "kwargsrepr": f"{{'envelope': <{message_type} id={message_id}>}}"}


def _route(kind: str, message_type: str) -> tuple[str, str]:
    return ("commands", message_type) if kind == "command" else (f"events.{message_type}", message_type)


class AmqpLoop:
    def __init__(self, broker_url: str) -> None:
        transport, host, port, user, password, vhost, _ = url_to_parts(broker_url)
        self.conn = amqp.Connection(host=f"{host}:{port or 5672}", userid=user, password=password,
                                    virtual_host=vhost or "/")
        self.conn.connect()

    def drain(self, *, batch_size: int | None = None, timeout: float = 10.0) -> int:
        """Publish every unpublished row; return how many."""
        batch_size = batch_size or settings.BUS_RELAY_BATCH_SIZE
        channel = self.conn.channel()
        channel.confirm_select()
        # Confirms settle tags in order up to one (``multiple``) or one tag at a time.
        settled_up_to, settled, refused = 0, set(), []

        def on_ack(tag, multiple):
            nonlocal settled_up_to
            if multiple:
                settled_up_to = max(settled_up_to, tag)
            else:
                settled.add(tag)

        def on_nack(tag, multiple):
            refused.append(tag)

        def on_return(exc, exchange, routing_key, message):
            refused.append(message.properties["application_headers"]["id"])

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        channel.events["basic_return"].add(on_return)
        headers = _Headers()
        tag, total = 0, 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                rows = _claim(cursor, batch_size)
                if not rows:
                    channel.close()
                    return total
                for _, message_id, kind, message_type, conversation_id, envelope in rows:
                    exchange, key = _route(kind, message_type)
                    # basic.publish, mandatory; sent as a method, without the socket poll for a
                    # connection.blocked notice py-amqp's basic_publish makes before each message.
                    channel.send_method(spec.Basic.Publish, "Bssbb", (0, exchange, key, True, False), amqp.Message(
                        _body(envelope), content_type="application/json", content_encoding="utf-8",
                        delivery_mode=2, priority=0, application_headers=headers(message_type, message_id),
                        correlation_id=conversation_id, reply_to="",  # as the platform's relay: the conversation
                    ))
                tag += len(rows)
                deadline = time.monotonic() + timeout
                while True:
                    while settled_up_to + 1 in settled:  # single acks close the gap one by one
                        settled_up_to += 1
                    if settled_up_to >= tag:
                        break
                    self.conn.drain_events(timeout=max(0.01, deadline - time.monotonic()))
                settled.clear()
                if refused:
                    raise RuntimeError(f"the broker refused or returned {len(refused)} messages")
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

    def drain(self, *, batch_size: int | None = None) -> int:
        """Publish every unpublished row; return how many."""
        batch_size = batch_size or settings.BUS_RELAY_BATCH_SIZE
        headers = _Headers()
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
                    body = base64.b64encode(_body(envelope)).decode()
                    message_headers = headers(message_type, message_id)
                    for queue in queues[route]:
                        pipe.xadd(queue, {"handouts": 0, "payload": json.dumps({
                            "body": body, "content-encoding": "utf-8", "content-type": "application/json",
                            "headers": message_headers,
                            "properties": {"correlation_id": conversation_id, "reply_to": "", "delivery_mode": 2,
                                           "priority": 0,
                                           "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
                                           "delivery_info": {"exchange": "", "routing_key": queue}},
                        })})
                pipe.execute()
                _mark(cursor, rows)
                total += len(rows)

    def close(self) -> None:
        self.client.close()
