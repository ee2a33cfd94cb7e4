"""Handling a batch of deliveries in one database transaction, in a worker's pool process.

The worker's main process hands a pool process several deliveries at once
(``messaging.batch_dispatch``); this runs them. Each delivery keeps every
guarantee it has alone, and costs less:

- one transaction for the batch: one BEGIN and one COMMIT (one wait for the
  log flush) instead of one per delivery;
- one statement claims the inbox rows of every (message, handler) pair;
- one statement stores every delivery's task result, in the same commit;
- one round trip through the pool's pipes for the batch.

Optimistic: the batch is tried whole, with no savepoint per delivery. If
anything goes wrong in it (a handler raises, a message is not for this
context, the database connection is lost), the transaction is rolled back,
so nothing of any delivery was applied, and every delivery of the batch runs
again alone, through Celery's tracer and ``messaging.tasks.message_task``
exactly as a delivery that was never batched: its own transaction, retries,
dead letters, the wait for the database. A failing delivery therefore fails
only itself, and the path that decides a failure's fate is the one path there
is. The price of a failure is that the batch's good deliveries run twice
(once rolled back); failures are rare, savepoints on every delivery are not.

Each delivery still gets the log line Celery's tracer writes for a task that
succeeded. What the tracer does per task and this does not, on the batched
path: Celery's task signals (``task_prerun``, ``task_postrun``, ``task_success``)
are not sent (the Django fixup's receivers would close the connection inside
the batch's transaction); what the platform connected to them (replacing a
broken connection) is done once per batch.
"""

from __future__ import annotations

import contextlib
import logging
import time

from celery import current_app, states
from celery.app.task import Context
from celery.app.trace import LOG_SUCCESS, fast_trace_task, trace_task_ret
from celery.app.trace import info as trace_log
from celery.app.trace import logger as trace_logger
from celery.utils.saferepr import saferepr
from django.db import close_old_connections, connection, transaction
from kombu.serialization import loads, prepare_accept_content

from messaging import inbox
from messaging.contexts import worker_context
from messaging.delivery import Accepted, accept
from messaging.task_message import envelope_from_arguments

logger = logging.getLogger(__name__)

#: What the pool process returns for one delivery, as Celery's tracer does:
#: (failed, the result's repr or the failure's ExceptionInfo, runtime in seconds).
Outcome = tuple[int, object, float]


class _NotTheBatchedPath(Exception):
    """A delivery of the batch needs the single path (it is refused, or it failed)."""


def run_batch(items: list[tuple]) -> list[Outcome]:
    """Handle ``items`` (each what Celery's tracer takes for one task) in one transaction.

    Returns one outcome per item, in order. Runs in a pool process.
    """
    app = current_app._get_current_object()
    try:
        return _in_one_transaction(app, items)
    except _NotTheBatchedPath as exc:
        logger.info("a batch of %d deliveries runs one by one: %s", len(items), exc)
    except Exception as exc:  # anything: the single path decides each delivery's fate
        logger.warning("a batch of %d deliveries was rolled back and runs again one by one: %s: %s",
                       len(items), type(exc).__name__, exc)
    trace = fast_trace_task if app.use_fast_trace_task else trace_task_ret
    return [trace(*item) for item in items]


def _in_one_transaction(app, items: list[tuple]) -> list[Outcome]:
    context = worker_context()
    accept_content = prepare_accept_content(app.conf.accept_content)
    deliveries = []
    for task_name, task_id, request_dict, body, content_type, content_encoding in items:
        args, kwargs, embed = loads(body, content_type, content_encoding, accept=accept_content)
        request = Context({**request_dict, **(embed or {})}, args=args, kwargs=kwargs, called_directly=False,
                          is_eager=False)
        verdict = accept(envelope_from_arguments(args, kwargs), context)
        if not isinstance(verdict, Accepted):
            raise _NotTheBatchedPath(f"delivery {task_id} is refused: {verdict.reason}")
        deliveries.append((app.tasks[task_name], task_id, request, verdict))

    # What the platform's task_prerun receiver does before a task: replace a broken connection.
    close_old_connections()
    outcomes = []
    with transaction.atomic(), _without_savepoints(connection):
        claimed = inbox.claim_all([(d.envelope, handler.name) for *_, d in deliveries for handler in d.handlers])
        results = []
        for task, task_id, request, delivery in deliveries:
            started = time.monotonic()
            handled, duplicates = [], []
            for handler in delivery.handlers:
                claim = (delivery.envelope.id, handler.name)
                if claim in claimed:
                    claimed.discard(claim)  # a message twice in one batch: its second copy is a duplicate
                    inbox.run(delivery.envelope, delivery.message, handler)
                    handled.append(handler.name)
                else:
                    duplicates.append(handler.name)
            result = {"context": context, "handled": handled, "duplicates": duplicates}
            if not task.ignore_result:
                results.append((task_id, result, request))
            outcomes.append((0, saferepr(result, task.resultrepr_maxsize), time.monotonic() - started))
        _store_results(app.backend, results)
        if connection.needs_rollback:
            # A handler caught an error inside its own atomic block: without its savepoint the
            # whole batch is spoiled (Django would roll it back silently at the block's end).
            raise _NotTheBatchedPath("a handler caught a database error inside the batch")
        committing = time.monotonic()
    # The commit is every delivery's: each is charged an equal share of it.
    share = (time.monotonic() - committing) / len(outcomes)
    outcomes = [(failed, result, runtime + share) for failed, result, runtime in outcomes]
    logger.info("handled %d deliveries in one transaction", len(outcomes))
    if trace_logger.isEnabledFor(logging.INFO):
        # The line Celery's tracer writes for each task that succeeded, for each delivery.
        for (_, task_id, request, _), (_, result, runtime) in zip(deliveries, outcomes, strict=True):
            trace_log(LOG_SUCCESS, {"id": task_id, "name": request.task, "return_value": result, "runtime": runtime,
                                    "args": request.argsrepr, "kwargs": request.kwargsrepr})
    return outcomes


@contextlib.contextmanager
def _without_savepoints(connection):
    """No SAVEPOINT for the ``transaction.atomic()`` blocks of the services the handlers call.

    A savepoint lets a block fail without spoiling the transaction around it; in
    a batch, any failure rolls back the whole transaction and each delivery runs
    again alone, with savepoints. Without them a block that fails marks the
    transaction for rollback (Django's ``needs_rollback``), which ends the batch.
    Saves a round trip pair per service call. Django asks ``features`` whether
    the database uses savepoints; the flag is this connection's own.
    """
    features = connection.features
    uses_savepoints = features.uses_savepoints
    features.uses_savepoints = False
    try:
        yield
    finally:
        features.uses_savepoints = uses_savepoints


def _store_results(backend, results: list[tuple]) -> None:
    """Every SUCCESS of the batch, in its transaction: one statement with the platform's backend."""
    if hasattr(backend, "store_rows"):
        if results:
            backend.store_rows([backend.result_row(task_id, result, states.SUCCESS, request=request)
                                for task_id, result, request in results])
        return
    for task_id, result, request in results:  # another backend, configured by the deployment
        backend.mark_as_done(task_id, result, request=request)
