"""The flow contract's bus (``tests.flows``) on the platform's real processes.

``settle()`` waits until the bus is quiet: nothing due in the outbox, no
message waiting in any queue of a running context, and no worker holding one;
``stopped(context)`` stops that context's worker and starts it again. Nothing
here names a broker: queue depths come from passive declares, which RabbitMQ
and kombu's virtual transports (Redis) answer alike, and busy workers from
Celery's remote control, so a later broker's flow tests reuse this driver with
processes started on it.
"""

from __future__ import annotations

import contextlib

from amqp.exceptions import NotFound
from celery import current_app
from django.db.models import Max

from messaging.models import OutboxMessage
from messaging.outbox import nudge_relay
from messaging.topology import Topology, context_of_queue
from tests.polling import FLOW_TIMEOUT, wait_for

#: Seconds to wait for the running workers' replies to a remote-control query.
INSPECT_TIMEOUT = 2.0


class PlatformBus:
    """Drives a flow on running processes (``conftest.PlatformProcesses``)."""

    def __init__(self, processes) -> None:
        self.processes = processes
        self.stopped_contexts: set[str] = set()

    def settle(self, timeout: float = FLOW_TIMEOUT) -> None:
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

    def _outbox_state(self) -> tuple[bool, int | None]:
        """Whether a row is due, and the newest row's id."""
        return OutboxMessage.objects.due().exists(), OutboxMessage.objects.aggregate(newest=Max("id"))["newest"]

    def _queue_depths(self) -> dict[str, int]:
        """Messages ready in each queue but those of stopped contexts (a missing queue holds none)."""
        depths = {}
        with current_app.connection_for_write() as connection:
            channel = connection.channel()
            for queue in Topology().queues():
                if context_of_queue(queue.name) in self.stopped_contexts:
                    continue
                try:
                    depths[queue.name] = channel.queue_declare(queue=queue.name, passive=True).message_count
                except NotFound:  # the broker closed the channel with its answer
                    depths[queue.name] = 0
                    channel = connection.channel()
        return depths

    def _busy_workers(self) -> bool:
        """Whether a running worker holds a message: handling it, or prefetched and waiting."""
        running = [name for name, process in self.processes.items()
                   if name.startswith("worker-") and process.poll() is None]
        if not running:
            return False
        # A connection of its own, as for the depths: the app's pooled one may be broken
        # by a broker restart the test made (Celery would not notice until it wrote).
        with current_app.connection_for_write() as connection:
            inspect = current_app.control.inspect(timeout=INSPECT_TIMEOUT, limit=len(running), connection=connection)
            return any(tasks for query in (inspect.active, inspect.reserved, inspect.scheduled)
                       for tasks in (query() or {}).values())
