"""Batched consumption, the worker's main process: deliveries go to the pool in batches.

Celery sends each task to a pool process as soon as one is free (its
semaphore counts the free processes) and queues the rest behind it. Here the
deliveries that are ready wait in one list instead, and each time a pool
process is free it takes all of them, up to ``BUS_BATCH_SIZE``, as one job
(``messaging.batch_run.run_batch``: one database transaction). A batch is
never waited for: a process that is free takes what is there, so at a light
rate a batch is one delivery, and batches grow only while every process is
busy.

Each delivery stays its own Celery task: its request is made, reserved,
accepted, acknowledged and reported (task events for Flower, the result
row) as before, from the batch's outcome, one by one; each is acknowledged
only when the pool process has returned, after the batch committed. One the
batch did not handle (it failed and was undone, or was refused) is sent to
the pool again alone, Celery's own way, with its own time limits. A batch
whose pool process died or went past its hard time limit fails each of its
deliveries as Celery fails one (rejected back to the queue); each of them is
then remembered and, when it comes back, goes Celery's own way, one task per
process, so one delivery that kills its process cannot take its neighbours'
delivery counts with it.

Only where Celery has the semaphore to tell free processes: the prefork pool
in the event loop (RabbitMQ, Redis). Elsewhere (the embedded broker's
synchronous loop, the threads pool) deliveries go to the pool one by one.
"""

from __future__ import annotations

import collections
import logging
import uuid
from weakref import ref

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import Terminated
from celery.worker import state as worker_state

from messaging.batch_run import run_batch

logger = logging.getLogger(__name__)

#: Delivery ids of batches that failed whole, remembered to run alone when they come back.
REMEMBERED_ALONE = 10_000


class BatchDispatch:
    """The consumer's ``on_task_request``: gathers ready requests, sends them in batches."""

    def __init__(self, controller, hub, size: int) -> None:
        self._controller, self._hub, self._size = controller, hub, size
        self._semaphore = controller.semaphore
        self._pending: list = []
        self._asking = False
        self._alone: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __call__(self, request) -> None:
        if request.id in self._alone:
            self._controller.process_task(request)  # Celery's own way, one task per process
            return
        self._pending.append(request)
        if not self._asking:
            # After the rest of what the broker sent in this turn of the event loop.
            self._asking = True
            self._hub.call_soon(self._ask_for_a_process)

    def _ask_for_a_process(self) -> None:
        # Runs _send_batch now if a process is free, or when the next one is.
        self._semaphore.acquire(self._send_batch)

    def _send_batch(self) -> None:
        batch, self._pending = self._pending[:self._size], self._pending[self._size:]
        self._asking = bool(self._pending)
        if self._pending:
            self._hub.call_soon(self._ask_for_a_process)
        live = [request for request in batch if not request.revoked()]
        if not live:
            self._semaphore.release()
        else:
            try:
                self._send(live)
            except Exception:
                # What Celery's worker does when sending a task to the pool fails.
                logger.critical("sending a batch of %d deliveries to the pool failed", len(live), exc_info=True)
                self._semaphore.release()

    def clear(self) -> None:
        """Forget what waits: the connection is lost, and its deliveries with it (the broker
        gives them again). What Celery's consumer does to its semaphore's waiters."""
        self._pending = []
        self._asking = False

    def _send(self, requests: list) -> None:
        ids = [request.id for request in requests]

        def accepted(pid, time_accepted):
            for request in requests:
                request.on_accepted(pid, time_accepted)

        def succeeded(outcomes):
            for request, outcome in zip(requests, outcomes, strict=True):
                if outcome is None:  # not handled in the batch (failed and undone, or refused)
                    _each(self._controller.process_task, request)
                else:
                    _each(request.on_success, outcome)

        def failed(exc_info):
            self._remember_alone(ids)
            exception = exc_info.exception
            if isinstance(exception, ExceptionWithTraceback):
                exception = exception.exc
            if isinstance(exception, Terminated):
                self._terminated(requests, exc_info)
                return
            for request in requests:
                _each(request.on_failure, exc_info)

        def timed_out(soft, timeout):
            if not soft:
                self._remember_alone(ids)
            for request in requests:
                _each(request.on_timeout, soft, timeout)

        hard, soft = _limits(requests)
        result = self._controller.pool.apply_async(
            run_batch,
            args=([(r.type, r.id, r.request_dict, r.body, r.content_type, r.content_encoding) for r in requests],),
            accept_callback=accepted, timeout_callback=timed_out, callback=succeeded, error_callback=failed,
            # Not one delivery's id: the pool would take a revoke of that delivery for the batch's.
            soft_timeout=soft, timeout=hard, correlation_id=f"batch-{uuid.uuid4()}",
        )
        for request in requests:
            request._apply_result = ref(result)  # what revoke(terminate=True) finds

    def _terminated(self, requests: list, exc_info) -> None:
        """The batch's process was terminated: a revoke (``terminate=True``) of one of its
        deliveries, or the worker's cold shutdown. Only a revoked delivery is revoked; the
        others, unacknowledged still, go to the pool again, alone."""
        shutting_down = any(flag is not None and flag is not False
                            for flag in (worker_state.should_stop, worker_state.should_terminate))
        for request in requests:
            if request.id in worker_state.revoked or shutting_down:
                _each(request.on_failure, exc_info)  # Celery's own: announced revoked, or left to the broker
            else:
                _each(self._controller.process_task, request)

    def _remember_alone(self, ids: list[str]) -> None:
        for delivery_id in ids:
            self._alone[delivery_id] = None
        while len(self._alone) > REMEMBERED_ALONE:
            self._alone.popitem(last=False)


def _limits(requests: list) -> tuple[float | None, float | None]:
    """The batch's hard and soft time limits: the longest any of its tasks has."""
    hard, soft = [], []
    for request in requests:
        time_limit, soft_time_limit = request.time_limits
        hard.append(time_limit or request.task.time_limit)
        soft.append(soft_time_limit or request.task.soft_time_limit)
    return (None if None in hard else max(hard)), (None if None in soft else max(soft))


def _each(callback, *args) -> None:
    """One delivery's report; one that fails never keeps the others from theirs."""
    try:
        callback(*args)
    except Exception:
        logger.exception("reporting a delivery of a batch failed")
