"""Putting an envelope on the broker as a Celery task message.

Every message is a Celery task message whose task name is the message type
and whose only keyword argument is the envelope, so Flower and
django-celery-results see commands and events alike. The Celery task id is
the message id.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.conf import settings
from kombu import Exchange

#: The keyword argument that carries the envelope in the task message.
ENVELOPE_ARGUMENT = "envelope"


def publish_envelope(
    producer,
    envelope: dict[str, Any],
    *,
    exchange: Exchange | str,
    routing_key: str,
    retries: int = 0,
    delay: float | None = None,
    confirm_timeout: float | None = None,
) -> None:
    """Publish ``envelope`` and return once the broker has it (with confirms on).

    ``delay`` holds a retry back: on RabbitMQ as the message's TTL in a retry
    queue (``exchange`` is then a retry exchange), on the embedded broker as a
    Celery countdown, which the worker waits out itself.
    Raises whatever the transport raises: the caller decides what a failure means.
    """
    embedded = settings.BUS_EMBEDDED_BROKER
    task_message = current_app.amqp.as_task_v2(
        envelope["id"],
        envelope["type"],
        kwargs={ENVELOPE_ARGUMENT: envelope},
        retries=retries,
        countdown=delay if embedded else None,
        # Logs and Flower show the type and ids, never the payload.
        argsrepr="()",
        kwargsrepr=f"{{'envelope': <{envelope['type']} id={envelope['id']}>}}",
    )
    producer.publish(
        task_message.body,
        exchange=exchange,
        routing_key=routing_key,
        headers=task_message.headers,
        serializer="json",
        delivery_mode=2,  # persistent
        retry=False,
        confirm_timeout=confirm_timeout,
        expiration=delay if delay and not embedded else None,
        **task_message.properties,
    )
