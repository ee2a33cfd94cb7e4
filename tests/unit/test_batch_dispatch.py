"""The worker's main process gathers ready deliveries into batches (``messaging.batch_dispatch``):
Celery's semaphore of free pool processes, a stand-in event loop and pool, and requests
that record what Celery's request would be told."""

import pytest
from billiard.einfo import ExceptionInfo
from billiard.exceptions import Terminated, WorkerLostError
from celery.worker import state as worker_state
from kombu.asynchronous.semaphore import LaxBoundedSemaphore

from messaging.batch_dispatch import BatchDispatch
from messaging.batch_run import run_batch


class _Loop:
    """The event loop's ``call_soon``: callbacks run when the test turns the loop."""

    def __init__(self):
        self.ready = []

    def call_soon(self, callback, *args):
        self.ready.append((callback, args))

    def turn(self):
        ready, self.ready = self.ready, []
        for callback, args in ready:
            callback(*args)


class _ApplyResult:
    """What the pool returns for a job (the request keeps a weak reference to it)."""


class _Pool:
    def __init__(self, semaphore):
        self.jobs, self.semaphore = [], semaphore

    def apply_async(self, func, args, **callbacks):
        self.jobs.append((func, args[0], callbacks))
        return _ApplyResult()

    def finish(self, job, outcomes):
        """The pool process returned: billiard frees its slot, then calls the callback."""
        self.semaphore.release()
        job[2]["callback"](outcomes)


class _Controller:
    def __init__(self, processes):
        self.semaphore = LaxBoundedSemaphore(processes)
        self.pool = _Pool(self.semaphore)
        self.alone = []

    def process_task(self, request):
        self.alone.append(request.id)


class _Request:
    """What the dispatcher reads of Celery's request, and what it tells it."""

    type = "catalog.ProductPriceChanged"
    request_dict, body, content_type, content_encoding = {}, b"[]", "application/json", "utf-8"
    time_limits = (None, None)

    class task:
        time_limit, soft_time_limit = 300, 240

    def __init__(self, request_id, revoked=False):
        self.id, self._revoked, self.told = request_id, revoked, []

    def revoked(self):
        return self._revoked

    def on_accepted(self, pid, time_accepted):
        self.told.append(("accepted", pid))

    def on_success(self, outcome):
        self.told.append(("success", outcome))

    def on_failure(self, exc_info):
        self.told.append(("failure", exc_info))

    def on_timeout(self, soft, timeout):
        self.told.append(("timeout", soft))


def _ready(dispatch, loop, ids: str) -> list[_Request]:
    """Requests for ``ids`` handed to the dispatch in one turn of the loop."""
    requests = [_Request(request_id) for request_id in ids]
    for request in requests:
        dispatch(request)
    loop.turn()
    return requests


def _dispatch(processes=2, size=3):
    controller, loop = _Controller(processes), _Loop()
    return BatchDispatch(controller, loop, size), controller, loop


def test_a_free_process_takes_what_is_ready_at_once_and_a_busy_pool_lets_batches_grow():
    dispatch, controller, loop = _dispatch(processes=1, size=3)
    first = _Request("a")
    dispatch(first)
    loop.turn()
    # Nothing waited: the one delivery there is a batch of one.
    assert [[item[1] for item in items] for _, items, _ in controller.pool.jobs] == [["a"]]
    assert all(func is run_batch for func, _, _ in controller.pool.jobs)

    for request_id in "bcde":  # arrive while the only process is busy
        dispatch(_Request(request_id))
    loop.turn()
    assert len(controller.pool.jobs) == 1

    controller.pool.finish(controller.pool.jobs[0], [(0, "ok", 0.01)])
    assert [item[1] for item in controller.pool.jobs[1][1]] == ["b", "c", "d"]  # at most BUS_BATCH_SIZE
    assert first.told == [("success", (0, "ok", 0.01))]
    controller.pool.finish(controller.pool.jobs[1], [(0, "ok", 0.01)] * 3)
    loop.turn()
    assert [item[1] for item in controller.pool.jobs[2][1]] == ["e"]


def test_each_request_of_a_batch_hears_its_own_outcome_and_its_acceptance():
    dispatch, controller, loop = _dispatch()
    requests = _ready(dispatch, loop, "abc")
    (_, _, callbacks), = controller.pool.jobs

    callbacks["accept_callback"](4242, 1.0)
    callbacks["callback"]([(0, "one", 0.1), (1, "two", 0.2), (0, "three", 0.3)])

    assert [r.told for r in requests] == [
        [("accepted", 4242), ("success", (0, "one", 0.1))],
        [("accepted", 4242), ("success", (1, "two", 0.2))],
        [("accepted", 4242), ("success", (0, "three", 0.3))],
    ]


def test_a_revoked_request_is_left_out_and_an_all_revoked_batch_frees_its_process():
    dispatch, controller, loop = _dispatch(processes=1)
    dispatch(_Request("gone", revoked=True))
    loop.turn()
    assert controller.pool.jobs == [] and controller.semaphore.value == 1

    dispatch(_Request("gone-too", revoked=True))
    dispatch(_Request("kept"))
    loop.turn()
    assert [item[1] for item in controller.pool.jobs[0][1]] == ["kept"]


def _failure(exception: Exception) -> ExceptionInfo:
    try:
        raise exception
    except type(exception):
        return ExceptionInfo()


def test_a_delivery_the_batch_did_not_handle_goes_to_the_pool_again_alone():
    dispatch, controller, loop = _dispatch()
    requests = _ready(dispatch, loop, "abc")

    controller.pool.finish(controller.pool.jobs[0], [(0, "one", 0.1), None, (0, "three", 0.3)])

    assert controller.alone == ["b"]  # Celery's own way: its own process and time limits
    assert requests[1].told == []  # not acknowledged, not reported: its run alone will be
    assert requests[0].told == [("success", (0, "one", 0.1))]


def test_deliveries_of_a_batch_whose_process_died_fail_and_come_back_alone():
    dispatch, controller, loop = _dispatch()
    requests = _ready(dispatch, loop, "ab")
    lost = _failure(WorkerLostError("killed"))
    controller.pool.jobs[0][2]["error_callback"](lost)
    assert [r.told for r in requests] == [[("failure", lost)]] * 2  # Celery's: rejected back to the queue

    # Rejected back to the queue, each returns alone (Celery's own way), never in a batch again.
    dispatch(_Request("a"))
    dispatch(_Request("b"))
    dispatch(_Request("c"))
    loop.turn()
    assert controller.alone == ["a", "b"]
    assert [item[1] for item in controller.pool.jobs[1][1]] == ["c"]


@pytest.fixture
def revoked():
    yield worker_state.revoked
    worker_state.revoked.clear()


def test_terminating_one_delivery_of_a_batch_revokes_it_only_and_the_others_go_again_alone(revoked):
    dispatch, controller, loop = _dispatch()
    requests = _ready(dispatch, loop, "abc")
    (_, _, callbacks), = controller.pool.jobs
    assert callbacks["correlation_id"] not in {"a", "b", "c"}  # a revoke of "a" alone is no revoke of the batch

    revoked.add("b")  # revoke("b", terminate=True): the pool kills the batch's process
    terminated = _failure(Terminated(9))
    callbacks["error_callback"](terminated)

    assert requests[1].told == [("failure", terminated)]  # Celery's own: announced revoked
    assert requests[0].told == requests[2].told == []  # unacknowledged still
    assert controller.alone == ["a", "c"]


def test_past_its_hard_time_limit_a_batch_times_out_each_delivery_and_they_come_back_alone():
    dispatch, controller, loop = _dispatch()
    requests = _ready(dispatch, loop, "ab")
    callbacks = controller.pool.jobs[0][2]
    assert (callbacks["timeout"], callbacks["soft_timeout"]) == (300, 240)

    callbacks["timeout_callback"](True, 240)  # soft: a warning only
    dispatch(_Request("a"))
    loop.turn()
    assert controller.alone == []
    callbacks["timeout_callback"](False, 300)
    dispatch(_Request("b"))
    loop.turn()
    assert controller.alone == ["b"]
    assert requests[0].told == [("timeout", True), ("timeout", False)]


def test_a_lost_connection_forgets_what_waits():
    dispatch, controller, loop = _dispatch(processes=1)
    dispatch(_Request("a"))
    loop.turn()
    dispatch(_Request("stale"))
    loop.turn()

    dispatch.clear()
    controller.semaphore.clear()  # what Celery's consumer does to its own waiters
    dispatch(_Request("fresh"))
    loop.turn()

    assert [[item[1] for item in items] for _, items, _ in controller.pool.jobs] == [["a"], ["fresh"]]


def test_batches_only_where_the_pool_gives_its_processes_back_through_celerys_semaphore():
    from celery.concurrency.prefork import TaskPool as Prefork
    from celery.concurrency.thread import TaskPool as Threads

    from messaging.worker import _frees_processes_by_semaphore

    class Worker:
        def __init__(self, pool_cls, through_semaphore):
            self.pool_cls, self.semaphore = pool_cls, LaxBoundedSemaphore(2)
            self.process_task = self._process_task_sem if through_semaphore else self._process_task

        def _process_task_sem(self, request):
            pass

        def _process_task(self, request):
            pass

    assert _frees_processes_by_semaphore(Worker(Prefork, through_semaphore=True))
    # The threads pool gets a semaphore in the event loop, but never gives it back.
    assert not _frees_processes_by_semaphore(Worker(Threads, through_semaphore=True))
    assert not _frees_processes_by_semaphore(Worker(Prefork, through_semaphore=False))
