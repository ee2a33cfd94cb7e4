"""The relay's baseline: the loop a person would write by hand with py-amqp and SQL.

``SKIP LOCKED`` a batch of rows, publish them all on a channel in confirm
mode, wait for their confirms, mark them in one UPDATE. The same Celery task
message (body, headers) as the platform's relay puts on the broker.
"""

from __future__ import annotations

import time

import amqp
from django.db import connection, transaction
from kombu.utils.url import url_to_parts

from messaging.models import OutboxMessage

#: Celery's task message body after [args, kwargs]: no callbacks, no chain.
EMBED = ', {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
TABLE = OutboxMessage._meta.db_table


def connect(broker_url: str) -> amqp.Connection:
    transport, host, port, user, password, vhost, _ = url_to_parts(broker_url)
    conn = amqp.Connection(host=f"{host}:{port or 5672}", userid=user, password=password, virtual_host=vhost or "/")
    conn.connect()
    return conn


def drain(conn: amqp.Connection, *, batch_size: int = 500, timeout: float = 10.0) -> int:
    """Publish every unpublished row; return how many."""
    channel = conn.channel()
    channel.confirm_select()
    unconfirmed: set[int] = set()

    def on_ack(tag, multiple):
        unconfirmed.difference_update([t for t in unconfirmed if t <= tag] if multiple else [tag])

    channel.events["basic_ack"].add(on_ack)
    tag, total = 0, 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, message_id::text, kind, message_type, correlation_id::text, envelope::text FROM {TABLE} "
                "WHERE published_at IS NULL AND available_at <= statement_timestamp() "
                "ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED", [batch_size])
            rows = cursor.fetchall()
            if not rows:
                channel.close()
                return total
            for _, message_id, kind, message_type, conversation_id, envelope in rows:
                body = '[[], {"envelope": ' + envelope + "}" + EMBED
                exchange, key = ("commands", message_type) if kind == "command" else (f"events.{message_type}", message_type)
                channel.basic_publish(amqp.Message(
                    body, content_type="application/json", content_encoding="utf-8", delivery_mode=2,
                    application_headers={"lang": "py", "task": message_type, "id": message_id, "root_id": message_id,
                                         "retries": 0, "argsrepr": "()", "kwargsrepr": "{}"},
                    correlation_id=conversation_id,  # as the platform's relay: the conversation
                ), exchange=exchange, routing_key=key)
                tag += 1
                unconfirmed.add(tag)
            deadline = time.monotonic() + timeout
            while unconfirmed:
                conn.drain_events(timeout=max(0.01, deadline - time.monotonic()))
            cursor.execute(f"UPDATE {TABLE} SET published_at = now() WHERE id = ANY(%s)", [[r[0] for r in rows]])
            total += len(rows)

