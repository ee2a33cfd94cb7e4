"""The embedded broker, for trying the platform: kombu's filesystem transport
with one folder per queue, in ``BUS_DATA_DIR``.

What it cannot promise (the adapter ``Embedded`` says so, and the docs' broker
table): it has no delivery limit and no dead-letter queue, and a message taken
by a worker whose whole process is killed is gone. With no event loop, Celery
runs billiard's plain pool, whose processes share one job pipe and its lock: an
idle pool process killed while it waits holds that lock for good, and the
worker takes messages it never runs until restarted. A retry
waits in the worker (a Celery countdown) and goes back to its own queue.

kombu's own filesystem transport keeps every queue's messages in one folder
and, for every message it takes, lists and sorts that whole folder, once per
queue it tries: with a backlog of N messages across all queues, each delivery
costs O(N) per consumed queue (about 1.4 ms per listing of 1,000 files here),
and a worker consuming six queues pays it up to six times per message.

Here each queue has its own folder under ``data_folder_in``; a consumer lists
a queue's folder only when it has taken every name of its previous listing,
so a delivery costs O(1) on average and an empty queue costs one listing of
an empty folder. A message is written under a hidden temporary name and
renamed into place, so a consumer never reads half a file. An ack or reject
ends the worker's pause between polls at once (kombu sleeps a whole polling
interval whenever every prefetch slot is taken). A binding is added to its
exchange file without the truncate-then-lock window of kombu's, in which a
process starting at the same time read an empty file and died.
Everything else (exchanges in the control folder, durable fanout, taking a
message by moving its file away, hence losing it if the whole process is
killed before the ack) is kombu's filesystem transport unchanged.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from queue import Empty

from django.conf import settings
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from messaging.brokers.base import Broker

#: Suffix of a message file; anything else in a queue folder is ignored.
SUFFIX = ".msg"
#: Folder (under ``data_folder_in``) that taken messages are moved into while read.
TAKEN_FOLDER = ".taken"


def _folder_name(queue: str) -> str:
    # A queue name becomes a folder name: nothing that could leave data_folder_in.
    if not queue or queue.startswith(".") or "/" in queue or "\\" in queue or "\x00" in queue:
        raise ChannelError(f"Invalid queue name for the embedded broker: {queue!r}")
    return queue


class Channel(filesystem.Channel):
    def _queue_bind(self, exchange, routing_key, pattern, queue):
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            # "a+b" creates the file if needed but never truncates it before the lock is held.
            with open(file, "a+b", buffering=0) as f:
                filesystem.lock(f, filesystem.LOCK_EX)
                try:
                    f.seek(0)
                    content = f.read()
                    bindings = [filesystem.exchange_queue_t(*b) for b in loads(bytes_to_str(content))] if content else []
                    if binding not in bindings:
                        bindings.insert(0, binding)
                        f.truncate(0)
                        f.write(str_to_bytes(dumps(bindings)))  # appends, at 0 after the truncate
                finally:
                    filesystem.unlock(f)
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc

    def get_table(self, exchange):
        file = self._exchange_file(exchange)
        try:
            with open(file, "rb") as f:
                filesystem.lock(f, filesystem.LOCK_SH)
                try:
                    content = f.read()
                finally:
                    filesystem.unlock(f)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        # Empty: just created by a first binding that has not taken the lock yet (no queue bound).
        return [filesystem.exchange_queue_t(*b) for b in loads(bytes_to_str(content))] if content else []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: Names from the last listing of each queue's folder, oldest first.
        self._listed: dict[str, deque[str]] = {}
        self._folders_made: set[str] = set()

    def _queue_folder(self, queue: str, base: str | None = None) -> str:
        return os.path.join(base or self.data_folder_in, _folder_name(queue))

    def _new_queue(self, queue, **kwargs):
        folder = self._queue_folder(queue)
        os.makedirs(folder, exist_ok=True)
        self._adopt_flat_messages(queue, folder)

    def _adopt_flat_messages(self, queue: str, folder: str) -> None:
        """Move messages kombu's flat layout left for ``queue`` into its folder, oldest first."""
        flat_suffix = f".{queue}{SUFFIX}"
        try:
            names = [n for n in os.listdir(self.data_folder_in) if n.endswith(flat_suffix)]
        except FileNotFoundError:
            return
        for name in names:
            try:  # a zero prefix sorts them before every message written from now on
                os.rename(os.path.join(self.data_folder_in, name), os.path.join(folder, f"{0:020d}_{name}"))
            except OSError:
                pass  # taken or moved by another process meanwhile

    def _put(self, queue, payload, **kwargs):
        """Write ``payload`` to ``queue``'s folder: a hidden file, then renamed into place."""
        folder = self._queue_folder(queue, self.data_folder_out)
        if folder not in self._folders_made:
            os.makedirs(folder, exist_ok=True)
            self._folders_made.add(folder)
        # Wall-clock nanoseconds, zero-padded: names sort in publication order across processes.
        name = f"{time.time_ns():020d}_{uuid.uuid4().hex}{SUFFIX}"
        hidden = os.path.join(folder, f".{name}.tmp")
        try:
            with open(hidden, "wb", buffering=0) as f:
                f.write(str_to_bytes(dumps(payload)))
            os.rename(hidden, os.path.join(folder, name))
        except OSError as exc:
            raise ChannelError(f"Cannot add message {name!r} to queue {queue!r}") from exc

    def _get(self, queue):
        """Take the oldest message of ``queue``: whoever renames its file first has it."""
        folder = self._queue_folder(queue)
        listed = self._listed.get(queue)
        if not listed:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                raise Empty() from None
            listed = self._listed[queue] = deque(sorted(n for n in names if n.endswith(SUFFIX)))
        taken_folder = self.processed_folder if self.store_processed else os.path.join(self.data_folder_in,
                                                                                       TAKEN_FOLDER)
        while listed:
            name = listed.popleft()
            taken = os.path.join(taken_folder, f"{queue}.{name}")
            try:
                os.rename(os.path.join(folder, name), taken)
            except FileNotFoundError:
                if not os.path.isdir(taken_folder):
                    os.makedirs(taken_folder, exist_ok=True)
                    listed.appendleft(name)
                continue  # another consumer took it, or the queue was purged
            try:
                with open(taken, "rb") as f:
                    payload = f.read()
                if not self.store_processed:
                    os.remove(taken)
            except OSError as exc:
                raise ChannelError(f"Cannot read message {name!r} of queue {queue!r}") from exc
            return loads(bytes_to_str(payload))
        raise Empty()

    def basic_ack(self, delivery_tag, multiple=False):
        super().basic_ack(delivery_tag, multiple=multiple)
        self.connection.slot_freed.set()

    def basic_reject(self, delivery_tag, requeue=False):
        super().basic_reject(delivery_tag, requeue=requeue)
        self.connection.slot_freed.set()

    def _names(self, queue) -> list[str]:
        try:
            return [n for n in os.listdir(self._queue_folder(queue)) if n.endswith(SUFFIX)]
        except FileNotFoundError:
            return []

    def _size(self, queue):
        return len(self._names(queue))

    def _purge(self, queue):
        self._listed.pop(queue, None)
        count = 0
        folder = self._queue_folder(queue)
        for name in self._names(queue):
            try:
                os.remove(os.path.join(folder, name))
                count += 1
            except OSError:
                pass  # taken meanwhile
        return count


class Transport(filesystem.Transport):
    """kombu's filesystem transport, one folder per queue (``CELERY_BROKER_TRANSPORT``)."""

    Channel = Channel

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        #: Set by an ack or reject (from any thread): a prefetch slot is free again.
        self.slot_freed = threading.Event()

    def drain_events(self, connection, timeout=None):
        """kombu's polling loop, except that an ack ends the pause between polls.

        With every prefetch slot taken, kombu sleeps a whole polling interval
        before looking again, however soon a task finishes; here the wait ends
        as soon as a slot is freed, so the interval only bounds how late a new
        message is seen.
        """
        time_start = time.monotonic()
        get = self.cycle.get
        polling_interval = self.polling_interval
        if timeout and polling_interval and polling_interval > timeout:
            polling_interval = timeout
        while True:
            try:
                get(self._deliver, timeout=timeout)
            except Empty:
                if timeout is not None and time.monotonic() - time_start >= timeout:
                    raise socket.timeout() from None
                if polling_interval is not None:
                    self.slot_freed.wait(polling_interval)
                    self.slot_freed.clear()
            else:
                break


class Embedded(Broker):
    label = "embedded filesystem broker"
    messaging_system = "kombu_filesystem"
    transport = "messaging.brokers.embedded:Transport"
    has_delivery_limit = False
    keeps_a_killed_workers_message = False
    for_trying_only = True

    def prepare(self) -> None:
        """The filesystem transport fails on a missing folder."""
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        for folder in ("data_folder_in", "data_folder_out", "control_folder"):
            Path(self.transport_options()[folder]).mkdir(parents=True, exist_ok=True)

    def forget_leftovers(self) -> None:
        """Drop the event-monitor queues a previous Flower left.

        On RabbitMQ they are auto-deleted when their consumer goes; the filesystem
        transport cannot do that, so every event would pile up in a dead queue.
        """
        options = self.transport_options()
        (Path(options["control_folder"]) / "celeryev.exchange").unlink(missing_ok=True)
        queues = Path(options["data_folder_in"])
        # One folder per queue; loose files from kombu's flat layout too.
        for message in [*queues.glob("celeryev.*/*"), *queues.glob("*.celeryev.*.msg")]:
            message.unlink(missing_ok=True)

    def describe(self) -> str:
        return f"filesystem broker in {self.data_dir / 'broker'}"

    def carriage(self) -> dict[str, str]:
        return {
            "exchange": "a file named after the exchange in the broker's control folder, listing its "
                        "bindings (routing key, pattern, queue) as JSON; a publish writes a copy into "
                        "each bound queue's folder",
            "queue": f"a folder named after the queue under {self.transport_options()['data_folder_in']}, "
                     f"one file per message ('*{SUFFIX}', kombu's message as JSON, the body "
                     "base64-encoded), taken oldest first by moving it away",
        }

    def transport_options(self) -> dict:
        folder = self.data_dir / "broker"
        return {
            "data_folder_in": str(folder / "queues"),
            "data_folder_out": str(folder / "queues"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # Seconds a worker waits before looking at its queue folders again when all
            # are empty (kombu's default of 1 s put a second into every hop).
            "polling_interval": settings.BUS_EMBEDDED_POLL_INTERVAL,
        }

    def _queue_depth(self, channel, name: str) -> int:
        try:
            return super()._queue_depth(channel, name)
        except ChannelError:
            return 0
