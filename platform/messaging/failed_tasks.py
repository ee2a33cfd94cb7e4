"""Dead letters made outside a task, shown as that delivery's failed task.

A message that becomes a dead letter while its task runs fails that task
(``messaging.delivery.DeadLettered``). Two kinds never reach a task: what a
worker refuses at intake (``messaging.worker``) and what the broker dead-letters
itself, a message over its delivery limit because workers died holding it,
collected by the relay (``messaging.relay``). Each is reported here as the
failure of its delivery's task (``delivery_id(message id, context)``), with
its reason as the exception, in Flower (task events) and in the task results,
so that every dead letter is one failed task there. A report is a record for
people: it never raises, and a lost one loses nothing but the record.
"""

import logging

from messaging.delivery import DeadLettered
from messaging.models import DeadLetter
from messaging.task_message import delivery_id, kwargs_repr

logger = logging.getLogger(__name__)


def report_failed_delivery(row: DeadLetter, *, app, dispatcher=None) -> None:
    """Mark the task of ``row``'s delivery failed: a ``task-received`` and a
    ``task-failed`` event through ``dispatcher`` (a Celery event dispatcher, if
    events are on), so Flower knows its name even if it never saw it arrive,
    and a FAILURE result."""
    task_id = delivery_id(row.message_id, row.context) if row.message_id else str(row.id)
    failure = DeadLettered.of(row.reason, row.id, row.error)
    if dispatcher is not None and dispatcher.enabled:
        try:
            # The message id in the arguments' repr, as the bus's own task messages carry it.
            dispatcher.send("task-received", uuid=task_id, name=row.message_type or "(unreadable)", args="()",
                            kwargs=kwargs_repr(row.message_type, row.message_id), retries=0)
            dispatcher.send("task-failed", uuid=task_id, exception=repr(failure), traceback="")
        except Exception:
            logger.exception("could not send dead letter %s to Flower as a failed task", row.id)
    try:
        app.backend.mark_as_failure(task_id, failure)
    except Exception:
        logger.exception("could not store dead letter %s as a failed task result", row.id)
