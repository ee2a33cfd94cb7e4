"""The flow contract's bus (``tests.flows``) on the platform's real processes.

``run_until_quiet()`` waits until the bus is quiet: nothing due in the outbox, no
message waiting in any queue of a running context, and no worker holding one;
``stopped(context)`` stops that context's worker and starts it again. Nothing
here names a broker: queue depths come from the adapter of the broker the
processes run on (``messaging.brokers``: on Redis they count the messages taken
but not acknowledged too), and busy workers from Celery's remote control over a
connection to that broker, so every broker's contract
(``tests/integration/broker_contract.py``) drives its processes with this.
"""

from __future__ import annotations

import contextlib
import functools

from celery import Celery
from celery.app.control import Control
from django.db.models import Max
from django.test import override_settings

from messaging.models import OutboxMessage
from messaging.outbox import nudge_relay
from messaging.topology import Topology, context_of_queue
from tests.polling import FLOW_TIMEOUT, wait_for

#: Seconds to wait for the running workers' replies to a remote-control query.
INSPECT_TIMEOUT = 2.0


@functools.cache
def _remote_control(broker) -> Control:
    """Celery's remote control of the workers on ``broker``. Not ``current_app``'s: it
    publishes its broadcasts through the app's producer pool, on the broker the app was
    configured with, whatever connection it is given to read the replies on."""
    app = Celery("platform-bus", set_as_current=False)
    # The write URL, not ``broker_url``: the CELERY_BROKER_URL variable would win over that.
    app.conf.update(broker_write_url=broker.url, broker_transport=broker.transport,
                    broker_transport_options=broker.transport_options(), accept_content=["json"])
    return app.control


class PlatformBus:
    """Drives a flow on running processes (``conftest.PlatformProcesses``), through
    the adapter of the broker they run on (``processes.broker``)."""

    def __init__(self, processes) -> None:
        self.processes = processes
        self.broker = processes.broker
        self.stopped_contexts: set[str] = set()
        # The processes' retry schedule names RabbitMQ's retry queues: theirs, not this
        # process's (the test settings retry faster), or a retry waiting longer goes unseen.
        with override_settings(BUS_RETRY_BACKOFF=float(processes.env["BUS_RETRY_BACKOFF"]),
                               BUS_RETRY_BACKOFF_MAX=float(processes.env["BUS_RETRY_BACKOFF_MAX"])):
            self.queue_names = [queue.name for queue in Topology(broker=self.broker).queues()]

    def run_until_quiet(self, timeout: float = FLOW_TIMEOUT) -> None:
        """Return once every due message, and every message it led to, has been handled."""
        nudge_relay()  # a row made due, or unpublished again, by the test: no commit told the relay
        # Twice in a row: a message on its way from the broker to a worker is in neither count.
        wait_for(lambda: self.is_quiet() and self.is_quiet(), timeout=timeout, interval=0.1,
                 message="every message to be handled (the bus to be quiet)")

    def is_quiet(self) -> bool:
        # The outbox is read before and after the broker: a handler that committed
        # a message and acknowledged its own in between shows as a new row.
        before = self._outbox_state()
        if before[0]:
            return False
        if any(self._queue_depths().values()) or self._busy_workers():
            return False
        return self._outbox_state() == before

    @contextlib.contextmanager
    def stopped(self, context: str):
        """``context``'s worker is down (a warm shutdown): its messages wait in its queues."""
        name = f"worker-{context}"
        self.processes[name].terminate()
        self.processes[name].wait(timeout=60)
        self.stopped_contexts.add(context)
        try:
            yield self
        finally:
            self.stopped_contexts.discard(context)
            self.processes.start(name)
            self.processes.wait_until_ready([name])

    def _queue_depths(self) -> dict[str, int]:
        """Messages each queue holds (but those of stopped contexts): waiting, and on a
        broker that says so, taken and not acknowledged yet (a missing queue holds none)."""
        names = [name for name in self.queue_names if context_of_queue(name) not in self.stopped_contexts]
        # A connection of its own: the app's pooled one may be broken by a broker restart
        # the test made (Celery would not notice until it wrote).
        with self.broker.connection() as connection:
            return self.broker.queue_depths(connection.channel(), names)

    def _outbox_state(self) -> tuple[bool, int | None]:
        """Whether a row is due, and the newest row's id."""
        return OutboxMessage.objects.due().exists(), OutboxMessage.objects.aggregate(newest=Max("id"))["newest"]

    def _busy_workers(self) -> bool:
        """Whether a running worker holds a message: handling it, or prefetched and waiting."""
        running = [name for name, process in self.processes.items()
                   if name.startswith("worker-") and process.poll() is None]
        if not running:
            return False
        with self.broker.connection() as connection:
            inspect = _remote_control(self.broker).inspect(timeout=INSPECT_TIMEOUT, limit=len(running),
                                                          connection=connection)
            return any(tasks for query in (inspect.active, inspect.reserved, inspect.scheduled)
                       for tasks in (query() or {}).values())
