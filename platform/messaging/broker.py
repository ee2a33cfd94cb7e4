"""Putting an envelope on the broker as a Celery task message.

Every message is a Celery task message whose task name is the message type
and whose only keyword argument is the envelope, so Flower and
django-celery-results see commands and events alike. The Celery task id is
the message id.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
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
    countdown: float | None = None,
    confirm_timeout: float | None = None,
) -> None:
    """Publish ``envelope`` and return once the broker has it (with confirms on).

    Raises whatever the transport raises: the caller decides what a failure means.
    """
    task_message = current_app.amqp.as_task_v2(
        envelope["id"],
        envelope["type"],
        kwargs={ENVELOPE_ARGUMENT: envelope},
        retries=retries,
        countdown=countdown,
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
        **task_message.properties,
    )
