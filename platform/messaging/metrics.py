"""The bus's counters and histograms, recorded by the process where each thing happens.

Metrics are on when ``BUS_METRICS_DIR`` names a folder: each process writes its numbers
there (prometheus_client's multiprocess mode: files per process, named by its pid), so
what a worker's pool process counted stays counted after it exits, and ``/metrics``
(``messaging.metrics_endpoint``) adds up every process of this host. Off, ``recorder``
is a ``NoRecorder``, whose methods do nothing: recording then costs a call.

The numbers read from the database, the liveness files and the broker are no counters:
they are read once per scrape (``messaging.bus_state``). What is counted here:

- the relay: rows published (confirmed), rows per batch, the wait for a batch's confirms;
- a worker: each delivery's outcome, on both paths (one delivery in Celery's tracer,
  ``messaging.tasks``; a batch in one transaction, ``messaging.batch_run``) and the
  dead letters its intake makes (``messaging.worker``); each handler's run (``messaging.inbox``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from django.conf import settings

from messaging.registry import Handler, registry

logger = logging.getLogger(__name__)

#: A delivery's outcomes (the label ``outcome`` of ``bus_deliveries_total``).
HANDLED = "handled"  # a handler of the context ran (the others, if any, had already)
DUPLICATE = "duplicate"  # every handler of the context had handled it already (the inbox)
RETRIED = "retried"  # a handler failed, or the database was away: it waits in a retry queue
DEAD_LETTERED = "dead_lettered"
HELD_BACK = "held_back"  # a contract version newer than this worker's code: back to the broker
#: The ``message_type`` of what cannot be named (an unreadable message, a type no contract has):
#: a label takes only the platform's own types, whatever a sender writes.
UNKNOWN_TYPE = "unknown"

#: Rows per relay batch (``BUS_RELAY_BATCH_SIZE`` is 200 by default).
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
#: Seconds: a batch's confirms take milliseconds; ``BUS_CONFIRM_TIMEOUT`` is 10 s by default.
CONFIRM_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def outcome_of(result: dict) -> str:
    """The outcome of a delivery from what ``messaging.delivery.consume`` returned."""
    if result.get("dead_lettered"):
        return DEAD_LETTERED
    return HANDLED if result["handled"] else DUPLICATE


def known_type(message_type: object) -> str:
    """``message_type`` if a contract of this platform has it, else ``UNKNOWN_TYPE``."""
    if isinstance(message_type, str) and registry.contract_for(message_type) is not None:
        return message_type
    return UNKNOWN_TYPE


class NoRecorder:
    """Metrics off: every method does nothing."""

    def published(self, message_types: Iterable[str]) -> None:
        """The relay's rows of these types were published (the broker confirmed them)."""

    def relay_batch(self, size: int, confirm_wait: float | None) -> None:
        """The relay published a batch of ``size`` rows and waited ``confirm_wait`` seconds
        for its confirms (None: the broker confirms as it takes each, no wait of its own)."""

    def delivered(self, context: str, message_type: str, outcome: str) -> None:
        """A delivery of ``message_type`` to ``context`` ended with ``outcome``."""

    def handler_run(self, handler: Handler) -> contextlib.AbstractContextManager:
        """Times the handler's run in the ``with`` block."""
        return _NOT_TIMED


_NOT_TIMED = contextlib.nullcontext()


class Recorder(NoRecorder):
    """Metrics on: each method records into this process's files in ``folder``.

    The metrics are made at the first record, so a process that records nothing (a
    management command, the web) leaves no file. Recording never raises: it runs where
    messages are handled and published, whose outcome a count must never change. A
    record that fails (the folder unwritable, the disk full) is logged, and this process
    records nothing more.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._made: _Metrics | None = None

    def published(self, message_types: Iterable[str]) -> None:
        def record(metrics: _Metrics) -> None:
            # A batch is mostly a few types: one increment each, not one per row.
            for message_type, count in collections.Counter(message_types).items():
                metrics.published.labels(message_type).inc(count)

        self._record(record)

    def relay_batch(self, size: int, confirm_wait: float | None) -> None:
        def record(metrics: _Metrics) -> None:
            metrics.batch_size.observe(size)
            if confirm_wait is not None:
                metrics.confirm_wait.observe(confirm_wait)

        self._record(record)

    def delivered(self, context: str, message_type: str, outcome: str) -> None:
        self._record(lambda metrics: metrics.deliveries.labels(context, message_type, outcome).inc())

    @contextlib.contextmanager
    def handler_run(self, handler: Handler) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - started
            self._record(lambda metrics: metrics.handler_duration.labels(
                handler.context, handler.name, handler.message_type).observe(took))

    def _record(self, record: Callable[[_Metrics], None]) -> None:
        global recorder
        try:
            record(self._metrics())
        except Exception:
            logger.exception("recording metrics into %s failed: this process records none from now on", self.folder)
            recorder = NoRecorder()

    def _metrics(self) -> _Metrics:
        if self._made is None:
            # Once per process, whichever thread records first (the threads pool): two sets
            # would each open this process's files and write over each other's counts.
            with _making:
                if self._made is None:
                    self._made = _Metrics(self.folder)
        return self._made


_making = threading.Lock()


class _Metrics:
    """The metric objects, in multiprocess mode on ``folder``."""

    def __init__(self, folder: Path) -> None:
        from prometheus_client import Counter, Histogram, values

        folder.mkdir(parents=True, exist_ok=True)
        # prometheus_client reads the folder from the environment as it opens each file, and
        # picked its value class when first imported, perhaps before anyone set that: both now.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        values.ValueClass = values.MultiProcessValue()
        # registry=None: not prometheus_client's global registry; /metrics reads the files.
        self.published = Counter(
            "bus_published_messages", "Outbox rows the relay published (the broker confirmed them).",
            ["message_type"], registry=None)
        self.batch_size = Histogram(
            "bus_relay_batch_size", "Rows per publish batch of the relay.", buckets=BATCH_SIZE_BUCKETS, registry=None)
        self.confirm_wait = Histogram(
            "bus_relay_confirm_wait_seconds", "Seconds the relay waited for the broker's confirms of a batch.",
            buckets=CONFIRM_WAIT_BUCKETS, registry=None)
        self.deliveries = Counter(
            "bus_deliveries", "Deliveries of a message to a context, by outcome.",
            ["context", "message_type", "outcome"], registry=None)
        self.handler_duration = Histogram(
            "bus_handler_duration_seconds", "Seconds each handler ran (in its delivery's transaction).",
            ["context", "consumer", "message_type"], registry=None)


def recorder_for(folder: str | Path) -> NoRecorder:
    """A ``Recorder`` into ``folder``, or a ``NoRecorder`` if there is none."""
    return Recorder(folder) if folder else NoRecorder()


#: What every recording goes through: chosen once per process, from ``BUS_METRICS_DIR``.
recorder: NoRecorder = recorder_for(settings.BUS_METRICS_DIR)


def clear_folder(folder: str | Path | None = None) -> int:
    """Delete the metric files in ``folder`` (``BUS_METRICS_DIR`` by default) before this host's
    processes start: counts of an earlier run would otherwise be added to this one's.
    Returns how many files went. Never while those processes run: their counters would drop."""
    folder = folder or settings.BUS_METRICS_DIR
    if not folder or not Path(folder).is_dir():
        return 0
    removed = 0
    for path in Path(folder).glob("*.db"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
