"""The Celery worker consumer the platform's workers run (setting ``worker_consumer``).

No delivery stops the worker and none is dropped unseen. Celery's own
consumer acknowledges a body it cannot decode (a pickle, say) and only logs
it, with the payload; it rejects an unknown task name, which on the embedded
broker drops it; and a header of an unexpected type raises inside it and
stops the whole worker, again on every redelivery. Here a delivery is
checked before Celery reads it (``messaging.task_message``, by the policy the
consumer makes once, at start: this context's message types, whether a retry
may carry an eta on this broker), anything Celery
still fails on is caught, and each of these becomes a dead letter, never
executed; if even that cannot be written, the message is rejected to the
broker's dead-letter queue instead of being acknowledged.

Each delivery a worker takes becomes a task of its own id,
``delivery_id(message id, context)``: the two subscribers of one event are
two tasks in Flower and two task results. Every dead letter a worker makes
is a task FAILURE there, with its reason as the exception.
"""

import datetime
import logging

from billiard.einfo import ExceptionWithTraceback
from celery import bootsteps
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.request import Request
from django.conf import settings
from django.db import close_old_connections
from kombu.message import Message
from vine import promise

from messaging import brokers, metrics, task_message
from messaging.batch_dispatch import BatchDispatch
from messaging.contexts import worker_context
from messaging.dead_letters import dead_letter_raw_message
from messaging.delivery import DeadLettered
from messaging.failed_tasks import report_failed_delivery
from messaging.health import Heartbeat
from messaging.models import DeadLetter
from messaging.registry import registry
from messaging.task_message import IntakePolicy

logger = logging.getLogger(__name__)

#: Seconds a worker's task events wait to be sent to Flower together, and how many at most.
EVENTS_FLUSH_INTERVAL = 0.05
EVENTS_BUFFER_LIMIT = 500


def batch_size(context: str) -> int:
    """How many deliveries a pool process of ``context``'s worker takes at once (1: no batches)."""
    return max(1, int(settings.BUS_BATCH_SIZE_BY_CONTEXT.get(context, settings.BUS_BATCH_SIZE)))


def _frees_processes_by_semaphore(controller) -> bool:
    """Whether the worker sends tasks to its pool through Celery's semaphore of free processes,
    which the pool gives back as each job ends: billiard's prefork pool in the event loop. The
    threads and solo pools get the semaphore too, but never give it back."""
    return (
        controller is not None and getattr(controller, "semaphore", None) is not None
        and getattr(controller.pool_cls, "uses_semaphore", False)
        and controller.process_task == controller._process_task_sem
    )


def intake_policy(context: str) -> IntakePolicy:
    """What a worker of ``context`` accepts, on this platform's broker."""
    return IntakePolicy(
        context=context,
        handled_types=frozenset(handler.message_type for handler in registry.handlers if handler.context == context),
        eta_allowed=brokers.current().retries_wait_in_worker,
        longest_retry_wait=datetime.timedelta(seconds=settings.BUS_RETRY_BACKOFF_MAX),
    )


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
            *(step for step in CeleryConsumer.Blueprint.default_steps if not step.endswith(":DelayedDelivery")),
            "messaging.worker:LivenessStep",
        ]

    def __init__(self, *args, **kwargs):
        #: The context whose handlers this worker runs, and what it accepts: decided once,
        #: before Celery's steps are made (the liveness step names its file after the context).
        self.context = worker_context()
        self.intake = intake_policy(self.context)
        size = batch_size(self.context)
        batching = size > 1 and kwargs.get("hub") is not None and _frees_processes_by_semaphore(kwargs.get("controller"))
        if batching:
            # Room for a batch per pool process: deliveries must be here to be batched.
            multiplier = kwargs.get("prefetch_multiplier") or 1
            kwargs["prefetch_multiplier"] = max(multiplier, size)
            if kwargs.get("initial_prefetch_count"):  # 0: no prefetch limit at all
                kwargs["initial_prefetch_count"] = kwargs["initial_prefetch_count"] // multiplier * kwargs["prefetch_multiplier"]
        super().__init__(*args, **kwargs)
        #: Batched consumption (``messaging.batch_dispatch``), where the pool and loop allow it.
        self.batches = BatchDispatch(self.controller, self.hub, size) if batching else None
        if self.batches is not None:
            self.on_task_request = self.batches

    def on_close(self):
        if self.batches is not None:
            self.batches.clear()
        # The event loop drops its timers on a lost connection, the events' flush with them.
        self._events_flush_due = False
        super().on_close()

    #: Whether a flush of the buffered task events is on the timer.
    _events_flush_due = False

    def on_send_event_buffered(self):
        # Celery sends the task events (for Flower) buffered since the last turn of the
        # event loop at the next turn: one message on the broker per delivery, since a turn
        # reads one. They go every EVENTS_FLUSH_INTERVAL instead (or as soon as the
        # dispatcher holds its buffer limit): measured, that publishing was a quarter of
        # the worker's main process, which every delivery of a context passes through.
        if self.hub is not None and not self._events_flush_due:
            self._events_flush_due = True
            # Celery's dispatcher (made anew on each connection) sends at 24 events.
            self.event_dispatcher.buffer_limit = EVENTS_BUFFER_LIMIT
            self.hub.call_later(EVENTS_FLUSH_INTERVAL, self._flush_buffered_events)

    def _flush_buffered_events(self):
        self._events_flush_due = False
        self._flush_events()

    def shutdown(self):
        self._flush_events()  # what the timer still holds: the last deliveries' events
        super().shutdown()

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
            problem = task_message.problem_with(message, self.intake)
            if problem:
                return self._dead_letter(message, problem)
            # Accepted, so it has a UUID id. Celery's request copies the headers as it
            # is made, inside handle_task; the message keeps its own id after.
            message_id = task_message.as_delivery(message, self.context)
            self._taking = (message, message_id)
            try:
                return handle_task(message)
            except self.connection_errors + self.channel_errors:
                raise  # Celery reconnects; the broker redelivers the message
            except Exception as exc:
                # Anything else Celery raised here would stop the worker, on every
                # redelivery: the shapes above are what is known, this is the rest.
                logger.exception("the worker could not take a task message")
                return self._dead_letter(message, f"the worker could not take it: {type(exc).__name__}: {exc}")
            finally:
                self._taking = None
                task_message.restore_message_id(message, message_id)

        return on_task_received

    def on_decode_error(self, message, exc):
        self._dead_letter(message, f"cannot decode a {message.content_type!r} body: {type(exc).__name__}: {exc}")

    def on_unknown_message(self, body, message):
        self._dead_letter(message, "not a Celery task message")

    def on_unknown_task(self, body, message, exc):
        self._dead_letter(message, f"no task named {task_message.message_type_in(message.headers)!r} in this worker")

    def on_invalid_task(self, body, message, exc):
        self._dead_letter(message, f"invalid task message: {exc}")

    #: The message ``handle_task`` is taking and its own id, while its id header is the delivery's.
    _taking: tuple | None = None

    def _dead_letter(self, message, error: str) -> None:
        if message.acknowledged:
            return  # Celery settled it before it failed: acking again would raise in the event loop
        if self._taking is not None and self._taking[0] is message:
            # Celery gave up on it inside handle_task: the dead letter names the message.
            task_message.restore_message_id(message, self._taking[1])
        # The payload is never logged: it may hold personal data.
        message_id = task_message.message_id_in(message.headers)
        logger.error("dead-lettering an unreadable message (id %r): %s", message_id, error)
        # The main process only sees the database here, never between tasks as the
        # pool's children do: drop a connection that a database restart broke.
        close_old_connections()
        try:
            row = dead_letter_raw_message(
                message, reason=DeadLetter.Reason.UNREADABLE, context=self.context, error=error
            )
        except Exception:
            # The database down, say. Not a requeue: the message is a dead letter either
            # way, the broker keeps it in its dead-letter queue (RabbitMQ, Redis) and the relay
            # moves it into the table once the database is back; requeued, it would only
            # fail here again, each time counted toward the queue's delivery limit.
            logger.exception("could not record the dead letter; rejecting it to the broker's dead-letter queue")
            message.reject_log_error(logger, self.connection_errors)
            return
        message.ack()
        metrics.recorder.delivered(self.context, metrics.known_type(task_message.message_type_in(message.headers)),
                                   metrics.DEAD_LETTERED)
        # A failed task in Flower and the task results, as those the task itself makes.
        report_failed_delivery(row, app=self.app, dispatcher=self.event_dispatcher)


class DeliveryRequest(Request):
    """Celery's task request, but a message that became a dead letter is acknowledged.

    Its task fails (``DeadLettered``: a FAILURE in Flower and the task results),
    and Celery would reject a failed task's message to the broker's dead-letter
    queue (``CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT=False``, right for failures
    nobody recorded); this one is in the dead-letter table already.
    """

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exception = exc_info.exception
        if isinstance(exception, ExceptionWithTraceback):
            exception = exception.exc
        if isinstance(exception, DeadLettered):
            self.acknowledge()  # Celery's reject after this is then a no-op
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


class LivenessStep(bootsteps.StartStopStep):
    """Beats ``consuming`` (``messaging.health``) while the consumer is connected and consuming.

    Celery starts this step after the consumer's task step, once connected, and
    stops it when the connection is lost (before reconnecting). The beats come
    from the consumer's timer, which on RabbitMQ and Redis runs in the worker's event
    loop: a loop that hangs stops beating, and its file goes stale.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self.heartbeat = Heartbeat(f"worker-{c.context}")
        self.beating = None

    def start(self, c):
        self.heartbeat.beat("consuming")
        self.beating = c.timer.call_repeatedly(settings.BUS_HEALTH_INTERVAL, self.heartbeat.beat, ("consuming",))

    def stop(self, c):
        self._stop_beating()
        if any(flag is not None and flag is not False for flag in (worker_state.should_stop, worker_state.should_terminate)):
            self.heartbeat.beat("stopping", "finishing its tasks before it exits")
        else:
            self.heartbeat.beat("reconnecting", "lost the broker connection")

    def shutdown(self, c):
        self._stop_beating()
        self.heartbeat.forget()

    def _stop_beating(self):
        if self.beating is not None:
            self.beating.cancel()
            self.beating = None

