"""Handling a batch of deliveries in one database transaction, in a worker's pool process.

The worker's main process hands a pool process several deliveries at once
(``messaging.batch_dispatch``); this runs them. Each delivery keeps every
guarantee it has alone, and costs less:

- one transaction for the batch: one BEGIN and one COMMIT (one wait for the
  log flush) instead of one per delivery;
- one statement claims the inbox rows of every (message, handler) pair;
- one statement stores every delivery's task result, in the same commit;
- one round trip through the pool's pipes for the batch.

Each delivery runs inside a savepoint of its own. One whose handler raises
is rolled back to it (and its inbox rows given back), the batch goes on and
commits, and the failed delivery is returned as not handled: the main process
sends it to the pool again alone (``messaging.batch_dispatch``), where Celery's
tracer runs ``messaging.tasks.message_task`` exactly as for a delivery that
was never batched: its own process, time limits and transaction, retries,
dead letters, the wait for the database. The same for one refused here (a
dead letter). A failing delivery therefore fails only itself, decided by the
one path there is; its handler ran twice (the first time undone), as on any
redelivery. If the batch's transaction itself fails (the database went away),
every delivery goes again alone. Inside a delivery the services' own ``transaction.atomic()``
blocks make no savepoints (``_without_savepoints``): a round trip pair saved
per block, at the price that a handler swallowing a database error inside one
fails its delivery, which then runs alone, with them.

Each delivery still gets the log line Celery's tracer writes for a task that
succeeded. What the tracer does per task and this does not, on the batched
path: Celery's task signals (``task_prerun``, ``task_postrun``, ``task_success``)
are not sent (the Django fixup's receivers would close the connection inside
the batch's transaction); what the platform connected to them (replacing a
broken connection) is done once per batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time

from celery import current_app, states
from celery.app.task import Context
from celery.app.trace import LOG_SUCCESS
from celery.app.trace import info as trace_log
from celery.app.trace import logger as trace_logger
from celery.utils.saferepr import saferepr
from django.db import close_old_connections, connection, transaction
from django.db.transaction import TransactionManagementError
from kombu.serialization import loads, prepare_accept_content

from messaging import inbox, log_context, metrics, tracing
from messaging.contexts import worker_context
from messaging.database import connection_lost
from messaging.delivery import Accepted, accept
from messaging.task_message import envelope_from_arguments

logger = logging.getLogger(__name__)

#: What the pool process returns for one delivery handled in the batch, as Celery's tracer
#: does for a task that succeeded: (0, the result's repr, runtime in seconds).
Outcome = tuple[int, str, float]


def run_batch(items: list[tuple]) -> list[Outcome | None]:
    """Handle ``items`` (each what Celery's tracer takes for one task) in one transaction.

    Returns one outcome per item, in order; ``None`` for a delivery the batch did
    not handle (it failed, and was undone, or it was refused), which the main
    process then sends to the pool again alone. Runs in a pool process.
    """
    app = current_app._get_current_object()
    try:
        handled = _in_one_transaction(app, items)
    except Exception as exc:  # the transaction itself failed (the database went away, say)
        logger.warning("a batch of %d deliveries was rolled back; each runs again alone: %s: %s",
                       len(items), type(exc).__name__, exc)
        handled = {}
    return [handled.get(index) for index in range(len(items))]


@dataclasses.dataclass
class _Delivery:
    index: int
    task: object
    task_id: str
    request: Context
    body: dict
    accepted: Accepted


def _in_one_transaction(app, items: list[tuple]) -> dict[int, Outcome]:
    """The batch's transaction; the outcomes of the deliveries handled in it, by index. The
    others go alone: refused here, or failed (rolled back to their savepoint)."""
    context = worker_context()
    accept_content = prepare_accept_content(app.conf.accept_content)
    deliveries = []
    for index, (task_name, task_id, request_dict, body, content_type, content_encoding) in enumerate(items):
        args, kwargs, embed = loads(body, content_type, content_encoding, accept=accept_content)
        request = Context({**request_dict, **(embed or {})}, args=args, kwargs=kwargs, called_directly=False,
                          is_eager=False)
        body = envelope_from_arguments(args, kwargs)
        verdict = accept(body, context)
        # A refused one becomes a dead letter alone, made and reported as it always is.
        if isinstance(verdict, Accepted):
            deliveries.append(_Delivery(index, app.tasks[task_name], task_id, request, body, verdict))

    # What the platform's task_prerun receiver does before a task: replace a broken connection.
    close_old_connections()
    outcomes, results, unclaimed, counted = {}, [], [], []
    with transaction.atomic():
        claimed = inbox.claim_all([(d.accepted.envelope, claim[1]) for d in deliveries for claim in _claims(d.accepted)])
        for delivery in deliveries:
            started = time.monotonic()
            # This delivery's inbox rows among those the batch claimed (a message twice in one
            # batch: its second copy finds none, a duplicate).
            mine = [claim for claim in _claims(delivery.accepted) if claim in claimed]
            claimed.difference_update(mine)
            with tracing.processing(delivery.body, context=context, delivery_id=delivery.task_id) as traced, \
                    _logged_as(delivery):
                try:
                    with transaction.atomic():  # this delivery's savepoint
                        result = _handle(delivery.accepted, mine, context)
                except Exception as exc:
                    if connection_lost(exc):
                        raise
                    # Undone to its savepoint, but for the inbox rows claimed for it at the start.
                    logger.info("delivery %s failed in a batch and runs again alone: %s: %s",
                                delivery.task_id, type(exc).__name__, exc)
                    traced.rolled_back(exc)
                    unclaimed.extend(mine)
                    continue
                traced.handled(result)
            if not delivery.task.ignore_result:
                results.append((delivery.task_id, result, delivery.request))
            counted.append((delivery.task.name, metrics.outcome_of(result)))
            outcomes[delivery.index] = (0, saferepr(result, delivery.task.resultrepr_maxsize),
                                        time.monotonic() - started)
        if unclaimed:
            inbox.unclaim(unclaimed)
        _store_results(app.backend, results)
        committing = time.monotonic()
    # Counted once committed, as Celery's tracer would count each; those that go alone are counted there.
    for message_type, outcome in counted:
        metrics.recorder.delivered(context, message_type, outcome)
    if outcomes:
        _log_success(deliveries, outcomes, commit=time.monotonic() - committing)
    return outcomes


def _claims(delivery: Accepted) -> list[tuple]:
    """The inbox keys of a delivery: (message id, handler) for each of its handlers here."""
    return [(delivery.envelope.id, handler.name) for handler in delivery.handlers]


def _handle(delivery: Accepted, mine: list[tuple], context: str) -> dict:
    """Run the delivery's handlers whose inbox rows were claimed for it; what the task returns."""
    handled, duplicates = [], []
    with _without_savepoints(connection):
        for handler in delivery.handlers:
            if (delivery.envelope.id, handler.name) in mine:
                inbox.run(delivery.envelope, delivery.message, handler)
                handled.append(handler.name)
            else:
                duplicates.append(handler.name)
        if connection.needs_rollback:
            # A handler caught an error inside a block of its own, which had no savepoint:
            # Django would roll the delivery back without a word at its savepoint's end.
            raise TransactionManagementError("a handler went on after a database error inside its atomic block")
    return {"context": context, "handled": handled, "duplicates": duplicates}


def _log_success(deliveries: list[_Delivery], outcomes: dict[int, Outcome], *, commit: float) -> None:
    """The batch's line, and for each delivery the line Celery's tracer writes for a task that
    succeeded, with its runtime and its share of the commit (which was every delivery's)."""
    share = commit / len(outcomes)
    for index, (failed, result, runtime) in list(outcomes.items()):
        outcomes[index] = (failed, result, runtime + share)
    logger.info("handled %d deliveries in one transaction", len(outcomes))
    if not trace_logger.isEnabledFor(logging.INFO):
        return
    for delivery in deliveries:
        if delivery.index in outcomes:
            _, result, runtime = outcomes[delivery.index]
            request = delivery.request
            with _logged_as(delivery):
                trace_log(LOG_SUCCESS, {"id": delivery.task_id, "name": request.task, "return_value": result,
                                        "runtime": runtime, "args": request.argsrepr, "kwargs": request.kwargsrepr})


def _logged_as(delivery: _Delivery):
    """Lines logged inside name the delivery, as the tracer's lines of a delivery handled alone do."""
    return log_context.delivery(delivery.accepted.envelope, delivery_id=delivery.task_id)


@contextlib.contextmanager
def _without_savepoints(connection):
    """No SAVEPOINT for the ``transaction.atomic()`` blocks of the services a handler calls.

    A savepoint lets a block fail without spoiling what is around it; here what
    is around it is the delivery's own savepoint, which any failure rolls back
    whole before the delivery runs again alone, with savepoints. Without them a
    block that fails marks the transaction for rollback (Django's
    ``needs_rollback``), which ``_handle`` turns into the delivery's failure.
    Saves a round trip pair per block. Django asks ``features`` whether the
    database uses savepoints; the flag is this connection's own. (Django's SQLite
    backend makes them whatever it says.)
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
