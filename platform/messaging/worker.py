"""The Celery worker consumer the platform's workers run (setting ``worker_consumer``).

Celery's own consumer acknowledges a body it cannot decode (a pickle, say)
and only logs it, with the payload; it rejects an unknown task name, which
on the embedded broker drops it. Here each of these becomes a dead letter
and is never executed; if even that cannot be written, the message is
rejected to the broker's dead-letter queue instead of being acknowledged.
"""

import logging

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.message import Message
from vine import promise
from django.conf import settings
from django.db import close_old_connections

from messaging.dead_letters import dead_letter_raw_message
from messaging.models import DeadLetter

logger = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    """Celery's consumer, minus silent drops and minus native delayed delivery.

    Celery turns native delayed delivery on whenever it sees quorum queues: it
    declares 28 exchanges and queues and binds every exchange of ours to them,
    so that a delayed task re-enters through its original exchange, which for
    an event is the fanout to every subscriber. Retries wait in the bus's own
    retry queues instead (``Topology.retry_route``).
    """

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [
            step for step in CeleryConsumer.Blueprint.default_steps if not step.endswith(":DelayedDelivery")
        ]

    def call_soon(self, p, *args, **kwargs):
        # Without an event loop (the embedded broker runs Celery's synloop) Celery
        # defers a late ack to the loop's next turn, which comes only when
        # drain_events(timeout=2.0) returns: with every prefetch slot taken nothing
        # arrives, so each slot was freed 2 s late (about one message a second per
        # worker). Ack at once, as Celery's main branch does (celery#10263, not in
        # 5.6.3); kombu's virtual QoS takes acks from any thread.
        if self.hub is None and getattr(p, "__func__", None) is Message.ack_log_error:
            try:
                p(*args, **kwargs)
            except Exception:
                logger.exception("acknowledging a message failed")
            return p
        return super().call_soon(p, *args, **kwargs)

    def create_task_handler(self, promise=promise):
        handle_task = super().create_task_handler(promise)

        def on_task_received(message):
            # Celery takes a task message without an "id" header, or with a body
            # that is not [args, kwargs, embed], for an unrecoverable error: the
            # whole worker stops, on every redelivery. Such a message is a dead letter.
            problem = _malformed_task_message(message)
            if problem:
                return self._dead_letter(message, problem)
            return handle_task(message)

        return on_task_received

    def on_decode_error(self, message, exc):
        self._dead_letter(message, f"cannot decode a {message.content_type!r} body: {type(exc).__name__}: {exc}")

    def on_unknown_message(self, body, message):
        self._dead_letter(message, "not a Celery task message")

    def on_unknown_task(self, body, message, exc):
        self._dead_letter(message, f"no task named {message.headers.get('task')!r} in this worker")

    def on_invalid_task(self, body, message, exc):
        self._dead_letter(message, f"invalid task message: {exc}")

    def _dead_letter(self, message, error: str) -> None:
        # The payload is never logged: it may hold personal data.
        logger.error("dead-lettering an unreadable message (id %s): %s", message.headers.get("id"), error)
        # The main process only sees the database here, never between tasks as the
        # pool's children do: drop a connection that a database restart broke.
        close_old_connections()
        try:
            dead_letter_raw_message(
                message, reason=DeadLetter.Reason.UNREADABLE, context=settings.BUS_CONTEXT, error=error
            )
        except Exception:
            # The database down, say. Not a requeue: the message is a dead letter either
            # way, RabbitMQ keeps it in its dead-letter queue (at least once) and the relay
            # moves it into the table once the database is back; requeued, it would only
            # fail here again, each time counted toward the queue's delivery limit.
            logger.exception("could not record the dead letter; rejecting it to the broker's dead-letter queue")
            message.reject_log_error(logger, self.connection_errors)
            return
        message.ack()


def _malformed_task_message(message) -> str | None:
    """Why a protocol-2 task message would crash Celery's consumer, or None."""
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return None  # not protocol 2: Celery's own checks dead-letter it (see on_unknown_message)
    if not headers.get("id"):
        return "task message without an id header"
    try:
        body = message.decode()
    except Exception:
        return None  # undecodable: on_decode_error or on_invalid_task dead-letters it
    args_kwargs_embed = isinstance(body, (list, tuple)) and len(body) == 3
    if not (args_kwargs_embed and isinstance(body[0], (list, tuple)) and all(isinstance(p, dict) for p in body[1:])):
        return "task message body is not [args, kwargs, embed]"
    return None
