"""Redis: a stream per queue, taken through a consumer group, with the bus's
fan-out, delivery limit and dead letters.

kombu's Redis transport keeps each queue in a list and takes a message with
BRPOP, then records it as unacked in a second command: a worker killed between
the two lost the message (celery/celery#7950; the chaos soak lost 1 in ~1,000
deliveries that way). Here each queue is a Redis stream with one consumer group
(``bus``), and a worker takes with ``XREADGROUP``, which hands a message out and
records it as pending to that consumer **in the same command**: there is no
instant at which a taken message is held by nobody. The rest of kombu's
transport (the event loop, pub/sub for Celery's own fanout traffic, bindings)
is kept; what the bus adds:

- **One message per take.** A script takes one entry from the first queue
  that has one; only when none has does the worker block on all of them
  (a blocking ``XREADGROUP`` over several streams hands out one from each,
  more than the prefetch allows). An idle worker pays a round trip more for it
  (``bench/analysis.md``).
- **Acks.** An ack is ``XACK`` + ``XDEL`` (one round trip); a message held
  longer than ``visibility_timeout`` (its worker died) goes back to its queue:
  a sweep finds it in the group's pending list, claims it (``XCLAIM`` with that
  idle time, so only one sweeper wins) and moves it back as a new entry, marked
  redelivered, in one script. A message given back (``reject(requeue=True)``, a
  warm shutdown's prefetched ones) moves back the same way.
- **Fan-out without pub/sub.** An event's exchange is a ``direct`` exchange
  that every subscriber's queue is bound to with the event's type, and a
  publish writes one copy into each bound queue, durably: a subscriber that
  was down finds every event in its stream when it returns. (kombu's
  ``fanout`` exchange is Redis pub/sub, which drops what nobody listens to at
  that instant.) Each copy gets a delivery tag of its own and is routed to its
  queue alone, so a copy given back returns to its own queue only.
- **Unroutable is reported.** A publish that finds no bound queue returns no
  queue (kombu's drops it with a warning); the relay then keeps the row.
- **A delivery limit.** Each entry carries how often the message was handed
  out before (``handouts``, raised by one each time it moves back), so the
  count travels with the message and is taken with it atomically. Past
  ``BUS_DELIVERY_LIMIT`` redeliveries it goes to the dead-letter queue instead
  of to a worker, as a quorum queue does.
- **A dead-letter queue.** A rejected message (``requeue=False``: Celery's
  reject of a failed task, the worker's when the dead-letter table cannot be
  written) moves, in one script, from its queue into the ``dead-letters``
  stream, with an ``x-death`` header naming its queue and the reason, as
  RabbitMQ's are; kombu's would delete it. The relay moves that stream into
  the dead-letter table, as on RabbitMQ.

A publish counts once Redis has answered it (the relay marks a row only
then); with ``appendonly yes`` Redis writes each command to its AOF before
answering, and ``appendfsync everysec`` fsyncs that file every second: a
killed ``redis-server`` loses nothing, a machine that loses power loses up to
a second of answered writes (docs/how-to/choose-a-broker.md).

Retries wait in the worker (a Celery countdown) and go back to the failing
consumer's queue alone, so ``visibility_timeout`` must exceed the longest a
worker holds a message: the task time limit plus the longest retry wait
(``messaging.checks``). Streams need Redis 6.2 or later (``XPENDING ... IDLE``);
message priorities are not kept (the bus sets none).

``bus_topology --plan`` reads the streams and kombu's binding sets
(``RedisTopologyEditor``); Redis keeps no exchanges and no queue arguments, so
there is nothing of theirs to plan.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.core import checks
from kombu import Connection, Queue
from kombu.exceptions import ChannelError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

from messaging import task_message
from messaging.brokers.base import (
    DEAD_LETTER_QUEUE,
    PERSISTENT,
    BatchOutcome,
    Broker,
    Outgoing,
    ReplyConfirmedPublisher,
)
from messaging.topology_plan import Binding, BrokerTopology, QueueState, TopologyEditor

logger = logging.getLogger(__name__)

#: The consumer group every queue's stream is read through.
GROUP = "bus"
#: An entry's fields: the kombu message as JSON, and how often it was handed out before.
PAYLOAD, HANDOUTS = "payload", "handouts"

#: Moves a held entry out of its stream (acked and deleted) into a stream: back into its
#: own queue (a restore) or into the dead letters. Nothing is added when the entry is gone
#: already (its holder acked it meanwhile), so a message is never both acked and moved;
#: nothing is touched when the destination is no stream (a script is not rolled back).
MOVE_SCRIPT = """
local kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. kind .. ', not a stream: nothing moved')
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', 'payload', ARGV[3], 'handouts', ARGV[4])
"""

#: Takes one entry from the first of the queues that has one, without blocking: a
#: blocking XREADGROUP over several streams hands out one from each that has one,
#: more than the channel's prefetch allows (BRPOP took exactly one).
TAKE_ONE_SCRIPT = """
for _, key in ipairs(KEYS) do
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', key, '>')
  if reply then return reply end
end
return false
"""

#: Forgets a queue's consumers that hold nothing and were idle longer than ARGV[2] ms
#: (each worker start adds one); checked and removed in one step, so a consumer that
#: takes a message meanwhile is never forgotten with it.
FORGET_IDLE_CONSUMERS_SCRIPT = """
local forgotten = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local field = {}
  for i = 1, #consumer, 2 do field[consumer[i]] = consumer[i + 1] end
  if field['pending'] == 0 and field['idle'] > tonumber(ARGV[2]) and field['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], field['name'])
    forgotten = forgotten + 1
  end
end
return forgotten
"""


@dataclass(frozen=True)
class Held:
    """A message this channel took and has not settled: where it is, and its hand-outs so far."""

    queue: str
    entry_id: str
    handouts: int


class QoS(virtual.QoS):
    """Acks and rejects against the stream the message was taken from; the
    pending list of the group, not a hash, is what remembers a taken message."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sweeps = 0

    def over_delivery_limit(self, delivery_tag) -> bool:
        """Whether the message was handed out more often than the limit allows:
        the first delivery and ``BUS_DELIVERY_LIMIT`` redeliveries."""
        held = self.channel.held.get(delivery_tag)
        # The dead-letter queue itself has none: a dead letter is never dead-lettered again.
        return held is not None and held.queue != DEAD_LETTER_QUEUE and held.handouts > settings.BUS_DELIVERY_LIMIT + 1

    def ack(self, delivery_tag) -> None:
        self.channel.settle(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False) -> None:
        if requeue:
            self.channel.give_back(delivery_tag)  # counted again when it is handed out next
        else:
            self.channel.dead_letter(delivery_tag, reason="rejected")
        super().ack(delivery_tag)  # the channel's own bookkeeping (prefetch)

    def restore_visible(self, start=0, num=10, interval=10) -> None:
        """Give back what dead consumers held longer than the visibility timeout
        (called by kombu's event loop every ``unacked_restore_interval`` seconds)."""
        self._sweeps += 1
        if (self._sweeps - 1) % (interval or 1):
            return
        self.channel.restore_idle(sorted(self.channel.active_queues))


def _copy_to_route(message: dict) -> dict:
    """A copy of a prepared message that routing may change without touching the original:
    kombu sets its body's encoding, its delivery tag and its delivery info in place."""
    properties = message["properties"]
    return {**message, "properties": {**properties, "delivery_info": dict(properties["delivery_info"])}}


def _is_missing_group(exc: Exception) -> bool:
    # UNBLOCKED: Redis 7's answer to a read blocked on a stream that was deleted meanwhile.
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))


class Channel(kombu_redis.Channel):
    QoS = QoS

    #: Each exchange's bindings as read during one publish batch (``bindings_read_once``).
    _tables: dict | None = None

    def __init__(self, *args, **kwargs) -> None:
        #: Messages taken and not settled yet, by delivery tag.
        self.held: dict[str, Held] = {}
        #: Queues whose consumer group this channel knows to exist.
        self._grouped: set[str] = set()
        #: When each queue read by ``basic_get`` was last swept for a dead consumer's messages.
        self._swept_at: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    @cached_property
    def consumer_name(self) -> str:
        """This channel's name in the consumer groups (what Redis lists as holding a message)."""
        return f"{socket.gethostname()}.{uuid.uuid4().hex[:12]}"

    @cached_property
    def _move(self):
        return self._create_client().register_script(MOVE_SCRIPT)

    @cached_property
    def _forget_idle_consumers(self):
        return self._create_client().register_script(FORGET_IDLE_CONSUMERS_SCRIPT)

    # Taking messages -------------------------------------------------------

    def _ensure_groups(self, queues, client=None) -> None:
        missing = [queue for queue in queues if queue not in self._grouped]
        if not missing:
            return
        with self.conn_or_acquire(client) as connected, connected.pipeline(transaction=False) as pipe:
            for queue in missing:
                # From the stream's start: what was published before any consumer came is read too.
                pipe.xgroup_create(queue, GROUP, id="0", mkstream=True)
            for queue, reply in zip(missing, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(reply, Exception) and str(reply).startswith("WRONGTYPE"):
                    raise ChannelError(
                        f"Redis key {queue!r} is not a stream: a queue of kombu's own Redis transport (a list), "
                        "left by an earlier version of the bus or another Celery app on this database. "
                        "Drain it with the version that wrote it, or give the bus a database of its own.") from reply
                if isinstance(reply, Exception) and not str(reply).startswith("BUSYGROUP"):
                    raise reply
            for queue in missing:
                # An expiring queue (Celery's replies) must not outlive its consumers as an empty stream.
                self._maybe_update_queues_expire(connected, queue)
        self._grouped.update(missing)

    def _new_queue(self, queue, auto_delete=False, **kwargs):
        super()._new_queue(queue, auto_delete=auto_delete, **kwargs)
        self._grouped.discard(queue)
        self._ensure_groups([queue])

    #: The queues the pending reply blocks on (None: the pending reply is the one-entry take's).
    _blocking_on: list | None = None

    def _brpop_start(self, timeout=None):
        # kombu's BRPOP, in two steps on the same connection: take one entry from the
        # first queue that has one (a script, in kombu's rotation order), and only when
        # none has, block on every queue (XREADGROUP, which hands out more than one only
        # when several queues get a message in the same instant). Either way, whatever
        # Redis hands out is pending to this consumer before the reply is sent.
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._ensure_groups(queues)
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self._blocking_on = None
        self._block_timeout = self.brpop_timeout if timeout is None else timeout
        self.client.connection.send_command("EVAL", TAKE_ONE_SCRIPT, len(queues), *queues, GROUP, self.consumer_name)
        self._taking_from = queues

    def _block_on(self, queues) -> None:
        self._blocking_on = queues
        self._brpop_sent_at = time.monotonic()
        self.client.connection.send_command(
            "XREADGROUP", "GROUP", GROUP, self.consumer_name, "COUNT", 1,
            "BLOCK", int((self._block_timeout or 0) * 1000), "STREAMS", *queues, *[">"] * len(queues),
        )

    def _brpop_read(self, **options):
        blocking = self._blocking_on is not None
        waiting_again = False
        try:
            try:
                streams = self.client.parse_response(
                    self.client.connection, "XREADGROUP" if blocking else "EVAL", **options)
            except self.connection_errors:
                # Disconnect, so the next round reconnects.
                self.client.connection.disconnect()
                raise
            except self.ResponseError as exc:
                if not _is_missing_group(exc):
                    raise
                self._grouped.clear()  # a queue was deleted (or Redis lost it): made again on the next take
                raise virtual.Empty() from None
            if not streams:
                if not blocking and not self._closing:
                    self._block_on(self._taking_from)  # every queue was empty: wait on all of them
                    waiting_again = True
                raise virtual.Empty()
            for stream, entries in streams:
                queue = bytes_to_str(stream)
                self._queue_cycle.rotate(queue)
                for entry_id, fields in entries:
                    self._hand_over(queue, entry_id, fields if isinstance(fields, dict) else _as_dict(fields))
            return True
        finally:
            if not waiting_again:
                self._in_poll = None
                self._blocking_on = None
                self._flush_brpop_reauth()

    def _poll_error(self, type, **options):
        # kombu's reads the pending reply and drops it: here what it handed out is delivered.
        if type != "BRPOP":
            return super()._poll_error(type, **options)
        with contextlib.suppress(virtual.Empty):
            self._brpop_read(**options)
        return None

    def _hand_over(self, queue: str, entry_id, fields: dict) -> None:
        payload = self._taken(queue, entry_id, fields)
        if payload is None:
            return
        if queue not in self.connection._callbacks:
            # Its consumer was cancelled while the take was under way: back at once, uncounted.
            held = self.held.pop(payload["properties"]["delivery_tag"])
            self._move_entry(held, queue, payload, held.handouts - 1)
            return
        self.connection._deliver(payload, queue)

    def _get(self, queue):
        with self.conn_or_acquire() as client:
            self._maybe_sweep(queue)
            self._ensure_groups([queue], client)
            try:
                while streams := client.xreadgroup(GROUP, self.consumer_name, {queue: ">"}, count=1):
                    [(_, [(entry_id, fields)])] = streams
                    payload = self._taken(queue, entry_id, fields)
                    if payload is not None:  # else it was unreadable, and is a dead letter: the next one
                        return payload
            except self.ResponseError as exc:
                if not _is_missing_group(exc):
                    raise
                self._grouped.discard(queue)
            finally:
                self._maybe_update_queues_expire(client, queue)
        raise virtual.Empty()

    def _taken(self, queue: str, entry_id, fields: dict) -> dict | None:
        """The message of an entry this channel now holds (None: it was unreadable, and is a
        dead letter). Each hand-out gets a delivery tag of its own, so a copy this channel
        takes again while it still holds the first (given back after the visibility timeout)
        is never acked or rejected in its place."""
        entry_id = bytes_to_str(entry_id)
        payload, handouts = self._readable(queue, entry_id, fields)
        if payload is None:
            return None
        payload["properties"]["delivery_tag"] = f"{queue}/{entry_id}"
        self.held[payload["properties"]["delivery_tag"]] = Held(queue, entry_id, handouts + 1)
        return payload

    def _readable(self, queue: str, entry_id: str, fields: dict) -> tuple[dict | None, int]:
        """The entry's kombu message and its hand-outs so far; one that is not (written to
        the stream by something other than the bus) moves to the dead letters, its bytes
        kept, instead of staying pending forever."""
        raw = fields.get(PAYLOAD.encode(), b"")
        try:
            payload, handouts = loads(bytes_to_str(raw)), int(fields.get(HANDOUTS.encode(), 0))
            if isinstance(payload["properties"], dict) and isinstance(payload.get("headers") or {}, dict):
                return payload, handouts
        except (ValueError, TypeError, KeyError, AttributeError):
            pass
        unreadable = {"body": base64.b64encode(raw).decode(), "content-type": "application/octet-stream",
                      "content-encoding": "binary", "headers": {}, "properties": {"body_encoding": "base64"}}
        self._move_entry(Held(queue, entry_id, 0), DEAD_LETTER_QUEUE,
                         self.dead_lettered(unreadable, queue, "unreadable"), 0)
        return None, 0

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        def deliver(message):
            if no_ack:
                self.settle(message.delivery_tag)  # Celery's own replies: nothing to give back
            elif self._dead_lettered_over_limit(message):
                return None
            return callback(message)

        return super().basic_consume(queue, no_ack, deliver, consumer_tag, **kwargs)

    def basic_get(self, queue, no_ack=False, **kwargs):
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self.settle(message.delivery_tag)
        elif message is not None and self._dead_lettered_over_limit(message):
            return None
        return message

    def _dead_lettered_over_limit(self, message) -> bool:
        if not self.qos.over_delivery_limit(message.delivery_tag):
            return False
        self.dead_letter(message.delivery_tag, reason="delivery_limit")
        self.qos.ack(message.delivery_tag)
        return True

    # Settling messages -----------------------------------------------------

    def settle(self, delivery_tag) -> None:
        """Acked: off the pending list and out of the stream."""
        held = self.held.pop(delivery_tag, None)
        if held is None:
            return
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.xack(held.queue, GROUP, held.entry_id).xdel(held.queue, held.entry_id).execute()

    def give_back(self, delivery_tag, message=None) -> None:
        """Back to its own queue, as a new entry marked redelivered (kombu's ``_restore``)."""
        message = message or self.qos._delivered.get(delivery_tag)
        held = self.held.pop(delivery_tag, None)
        if held is not None and message is not None:
            self._move_entry(held, held.queue, _redelivered(message._raw), held.handouts)

    def _restore(self, message, leftmost=False):
        # A warm shutdown's prefetched messages (kombu's restore_unacked): back to their queue.
        self.give_back(message.delivery_tag, message)

    def dead_letter(self, delivery_tag, *, reason: str) -> None:
        """Move the message from its queue into the dead-letter queue, in one step."""
        message = self.qos._delivered.get(delivery_tag)
        held = self.held.pop(delivery_tag, None)
        if held is not None and message is not None:
            self._move_entry(held, DEAD_LETTER_QUEUE, self.dead_lettered(message._raw, held.queue, reason), 0)

    def _move_entry(self, held: Held, destination: str, payload: dict, handouts: int, client=None) -> None:
        with self.conn_or_acquire(client) as connected:
            self._move(keys=[held.queue, destination], args=[GROUP, held.entry_id, dumps(payload), handouts],
                       client=connected)

    def restore_idle(self, queues) -> int:
        """Give back every message a consumer has held longer than the visibility timeout
        (its worker died): claimed first, so of two sweepers only one moves it."""
        idle_ms = int(self.visibility_timeout * 1000)
        restored = 0
        with self.conn_or_acquire() as client:
            for queue in queues:
                try:
                    stale = client.xpending_range(queue, GROUP, "-", "+", 100, idle=idle_ms)
                    if stale:
                        claimed = client.xclaim(queue, GROUP, self.consumer_name, idle_ms,
                                                [entry["message_id"] for entry in stale])
                        for entry_id, fields in claimed:
                            restored += self._give_back_claimed(queue, bytes_to_str(entry_id), fields, client)
                    self._forget_idle_consumers(keys=[queue], args=[GROUP, idle_ms, self.consumer_name], client=client)
                except self.ResponseError as exc:
                    if not _is_missing_group(exc):
                        raise
        return restored

    def _give_back_claimed(self, queue: str, entry_id: str, fields: dict, client) -> int:
        """Move an entry the sweep claimed back into its queue; one that fails to move stays
        claimed, for the next sweep after the visibility timeout, and the others still move."""
        if not fields:
            return 0  # acked meanwhile
        try:
            payload, handouts = self._readable(queue, entry_id, fields)
            if payload is None:
                return 0
            self._move_entry(Held(queue, entry_id, handouts + 1), queue, _redelivered(payload), handouts + 1, client)
            return 1
        except self.connection_errors:
            raise
        except Exception:
            logger.exception("could not give back entry %s of %s; the next sweep tries again", entry_id, queue)
            return 0

    def _maybe_sweep(self, queue: str) -> None:
        # A queue read only by basic_get (the relay's dead letters) has no event loop to
        # sweep it: its reader does, at most once per restore interval.
        now = time.monotonic()
        if now - self._swept_at.get(queue, float("-inf")) >= self.unacked_restore_interval:
            self._swept_at[queue] = now
            self.restore_idle([queue])

    def dead_lettered(self, payload: dict, queue: str, reason: str) -> dict:
        """The message as the dead-letter queue keeps it: RabbitMQ's ``x-death`` header
        (newest first) says which queue gave up on it and why."""
        headers = payload.get("headers") or {}
        payload = {**payload, "headers": {
            **headers,
            "x-death": [{"queue": queue, "reason": reason, "count": 1, "time": int(time.time())},
                        *(headers.get("x-death") or [])],
        }}
        payload["properties"] = {
            **payload.get("properties", {}),
            "delivery_tag": str(uuid.uuid4()),
            "delivery_info": {"exchange": "", "routing_key": DEAD_LETTER_QUEUE},
        }
        return payload

    # Publishing and sizes --------------------------------------------------

    @contextlib.contextmanager
    def bindings_read_once(self):
        """Read each exchange's bindings once for the messages published in this block
        (one round trip per exchange, not per message), as they were when first read."""
        self._tables = {}
        try:
            yield
        finally:
            self._tables = None

    def get_table(self, exchange):
        if self._tables is None:
            return super().get_table(exchange)
        if exchange not in self._tables:
            self._tables[exchange] = super().get_table(exchange)
        return self._tables[exchange]

    def basic_publish(self, message, exchange, routing_key, **kwargs):
        """Publish a copy to each queue bound to the route; return the queues (none: unroutable)."""
        if not exchange or self.typeof(exchange).type == "fanout":
            # The default exchange names its queue; fanout is Celery's own traffic
            # (task events, remote control), which is pub/sub by design.
            super().basic_publish(message, exchange, routing_key, **kwargs)
            return [routing_key] if not exchange else None
        queues = sorted(self.typeof(exchange).lookup(self.get_table(exchange), exchange, routing_key, None))
        for queue in queues:
            # Routed to its queue alone, with a delivery tag of its own (basic_publish gives one).
            super().basic_publish(_copy_to_route(message), "", queue, **kwargs)
        return queues

    def _put(self, queue, message, **kwargs):
        fields = {PAYLOAD: dumps(message), HANDOUTS: 0}
        publish_batch = kwargs.pop("_publish_batch", None)
        if publish_batch is not None:
            publish_batch.add("xadd", queue, fields)
            if queue in self._expires:
                publish_batch.add("pexpire", queue, self._expires[queue])
            return
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.xadd(queue, fields)
            if queue in self._expires:
                pipe.pexpire(queue, self._expires[queue])
            pipe.execute()

    def _size(self, queue) -> int:
        """Messages waiting to be taken (a queue's stream also holds the taken, unacked ones)."""
        return self.stream_sizes(queue)[1]

    def stream_sizes(self, queue) -> tuple[int, int]:
        """(taken and not acked yet, waiting) for the queue."""
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            length, pending = pipe.xlen(queue).xpending(queue, GROUP).execute(raise_on_error=False)
        held = 0 if isinstance(pending, Exception) else pending["pending"]
        return held, length - held

    def _purge(self, queue) -> int:
        """Remove what waits in the queue (not what is being handled): taken under a
        consumer of its own, then deleted."""
        self._ensure_groups([queue])
        purged, waiting = 0, self._size(queue)  # what waits now: what keeps coming is not purged
        with self.conn_or_acquire() as client:
            while purged < waiting and (streams := client.xreadgroup(
                    GROUP, f"purge.{self.consumer_name}", {queue: ">"}, count=min(500, waiting - purged))):
                ids = [entry_id for entry_id, _ in streams[0][1]]
                client.pipeline().xack(queue, GROUP, *ids).xdel(queue, *ids).execute()
                purged += len(ids)
        return purged

    def _delete(self, queue, *args, **kwargs):
        self._grouped.discard(queue)
        return super()._delete(queue, *args, **kwargs)


def _as_dict(fields: list) -> dict:
    """A stream entry's fields as a script returns them (name, value, name, value ...)."""
    return dict(zip(fields[::2], fields[1::2], strict=True))


def _redelivered(payload: dict) -> dict:
    """The message marked as delivered before (Celery and the worker's intake read it)."""
    payload = {**payload, "headers": {**(payload.get("headers") or {}), "redelivered": True}}
    properties = payload.get("properties") or {}
    payload["properties"] = {**properties,
                             "delivery_info": {**(properties.get("delivery_info") or {}), "redelivered": True}}
    return payload


class RedisPublisher(ReplyConfirmedPublisher):
    """A batch as one pipeline, the bindings of its events' exchanges read once.

    The relay's rows (stored envelopes, first sent) go straight to the channel, their task
    message serialised around the envelope's text, without a kombu Producer's publish.
    """

    def publish(self, messages: list[Outgoing]) -> BatchOutcome:
        with self.channel.bindings_read_once():
            wires = [self.wire(message) for message in messages]
            if None in wires:
                return super().publish(messages)
            return self._publish_wires(messages, wires)

    def _publish_wires(self, messages: list[Outgoing], wires: list[task_message.WireMessage]) -> BatchOutcome:
        outcome = BatchOutcome()
        routed: list[int] = []
        unroutable: list[int] = []
        try:
            batch = self.channel.create_publish_batch(max_size=sys.maxsize)  # one pipeline, sent by flush()
            try:
                for position, (message, wire) in enumerate(zip(messages, wires, strict=True)):
                    prepared = self.channel.prepare_message(
                        wire.body, 0, task_message.CONTENT_TYPE, task_message.CONTENT_ENCODING, wire.headers,
                        {**wire.properties, "delivery_mode": PERSISTENT},
                    )
                    queues = batch.publish(prepared, exchange=message.exchange_name, routing_key=message.routing_key)
                    (unroutable if queues == [] else routed).append(position)
                batch.flush()
            finally:
                batch.close()
        except Exception as exc:
            # As ReplyConfirmedPublisher: a pipeline does not say how far it got.
            outcome.error = exc
            return outcome
        outcome.confirmed, outcome.unroutable = routed, unroutable
        return outcome


class RedisTopologyEditor(TopologyEditor):
    """A queue is a stream; a binding is a member (routing key, pattern, queue) of kombu's
    set ``_kombu.binding.<exchange>``, which a publish reads to route. Redis keeps no
    exchanges (each process declares kombu's in its own memory) and no queue arguments."""

    def __init__(self, channel: Channel, *, active_within: float) -> None:
        self.channel = channel
        #: A consumer that has not read for this long is a dead worker's (Redis keeps it listed).
        self.active_within_ms = int(active_within * 1000)

    @property
    def client(self):
        return self.channel.client

    def actual(self) -> BrokerTopology:
        bindings = defaultdict(set)
        prefix = self.channel.keyprefix_queue % ("",)
        for key in self.client.scan_iter(match=f"{prefix}*", count=1000):
            exchange = bytes_to_str(key)[len(prefix):]
            for member in self.client.smembers(key):
                routing_key, _, queue = bytes_to_str(member).split(self.channel.sep)
                bindings[queue].add(Binding(exchange, routing_key))
        # A queue bound but without its stream yet (nothing published, no worker) is a queue too.
        names = {bytes_to_str(key) for key in self.client.scan_iter(count=1000, _type="STREAM")} | set(bindings)
        queues = {}
        for name in names:
            messages, consumers = self.counts(name)
            queues[name] = QueueState(name, arguments=None, bindings=frozenset(bindings[name]),
                                      messages=messages, consumers=consumers)
        return BrokerTopology(exchanges=None, queues=queues)

    def declare_queue(self, queue: QueueState) -> None:
        with contextlib.suppress(self.channel.ResponseError):  # BUSYGROUP: it exists
            self.client.xgroup_create(queue.name, GROUP, id="0", mkstream=True)
        for binding in sorted(queue.bindings):
            self.bind(queue.name, binding)

    def _binding_keys_and_member(self, queue: str, binding: Binding) -> tuple[list[str], str]:
        # A direct exchange's binding has no pattern (kombu's ``prepare_bind``); the permanent
        # set keeps kombu's sweep of expiring bindings off it.
        member = self.channel.sep.join([binding.routing_key, "", queue])
        return [self.channel.keyprefix_queue % (binding.exchange,),
                self.channel.keyprefix_binding_permanent % (binding.exchange,)], member

    def bind(self, queue: str, binding: Binding) -> None:
        keys, member = self._binding_keys_and_member(queue, binding)
        with self.client.pipeline() as pipe:
            for key in keys:
                pipe.sadd(key, member)
            pipe.execute()

    def unbind(self, queue: str, binding: Binding) -> None:
        keys, member = self._binding_keys_and_member(queue, binding)
        with self.client.pipeline() as pipe:
            for key in keys:
                pipe.srem(key, member)
            pipe.execute()

    def counts(self, queue: str) -> tuple[int, int]:
        """Entries in the stream (waiting, and taken but not acked), and the consumers
        that read it lately."""
        messages = self.client.xlen(queue)
        try:
            consumers = self.client.xinfo_consumers(queue, GROUP)
        except self.channel.ResponseError:
            return messages, 0  # no such stream, or no group yet: nobody reads it
        return messages, sum(1 for consumer in consumers if consumer["idle"] < self.active_within_ms)

    def delete_queue(self, queue: str) -> None:
        self.client.delete(queue)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the bus's fan-out, delivery limit and dead letters
    (``CELERY_BROKER_TRANSPORT``)."""

    Channel = Channel


class Redis(Broker):
    label = "Redis"
    messaging_system = "redis"
    transport = "messaging.brokers.redis:Transport"
    #: A direct exchange with every subscriber bound by the event's type: one copy per
    #: queue, durably (never kombu's fanout, which is pub/sub on Redis).
    event_exchange_type = "direct"

    def publisher(self, channel, *, timeout: float) -> RedisPublisher:
        return RedisPublisher(channel, timeout=timeout)

    def carriage(self) -> dict[str, str]:
        return {
            "exchange": (
                "kombu's virtual exchange: its bindings are the members of the Redis set "
                f"'{Channel.keyprefix_queue % '<exchange>'}' (routing key, pattern, queue); a publish "
                "adds one copy to the stream of each queue bound with its routing key"
            ),
            "queue": (
                f"a Redis stream named after the queue, read through the consumer group '{GROUP}' "
                f"(XREADGROUP) and acked with XACK and XDEL; each entry's field '{PAYLOAD}' is kombu's "
                f"message as JSON (the body base64-encoded, its headers and properties), '{HANDOUTS}' "
                "how often it was handed out before"
            ),
        }

    def redelivery_wait(self) -> float:
        return float(settings.BUS_REDIS_VISIBILITY_TIMEOUT)

    def configuration_problems(self) -> list:
        # A worker may hold a message for a retry's wait and then its run. Held longer
        # than the visibility timeout, Redis gives it to another worker meanwhile.
        longest_hold = settings.CELERY_TASK_TIME_LIMIT + settings.BUS_RETRY_BACKOFF_MAX
        floor = max(2 * settings.CELERY_TASK_TIME_LIMIT, longest_hold)
        if settings.BUS_REDIS_VISIBILITY_TIMEOUT >= floor:
            return []
        return [checks.Error(
            f"BUS_REDIS_VISIBILITY_TIMEOUT ({settings.BUS_REDIS_VISIBILITY_TIMEOUT} s) is shorter than "
            f"a worker may hold a message on Redis ({floor:g} s: twice CELERY_TASK_TIME_LIMIT, and at least "
            "CELERY_TASK_TIME_LIMIT plus BUS_RETRY_BACKOFF_MAX): Redis would hand a message still being "
            "handled, or waiting for its retry, to a second worker.",
            hint=f"Set BUS_REDIS_VISIBILITY_TIMEOUT to {floor:g} or more, or lower CELERY_TASK_TIME_LIMIT "
                 "or BUS_RETRY_BACKOFF_MAX.",
            id="messaging.E011",
        )]

    def transport_options(self) -> dict:
        visibility_timeout = settings.BUS_REDIS_VISIBILITY_TIMEOUT
        return {
            "visibility_timeout": visibility_timeout,
            # A dead worker's messages go back within a tenth of the timeout after it ends.
            "unacked_restore_interval": max(1, min(10, visibility_timeout // 10)),
            "unacked_restore_throttle": 1,
            # A broker gone without closing the connection shows up within seconds.
            "socket_keepalive": True,
            "health_check_interval": 25,
            "socket_timeout": settings.BUS_CONFIRM_TIMEOUT,
            "socket_connect_timeout": settings.BUS_CONFIRM_TIMEOUT,
        }

    def queue_depths(self, channel, names: list[str]) -> dict[str, int]:
        """Messages waiting in each queue and those taken but not acked yet: a killed
        worker's stay pending until the visibility timeout gives them back."""
        return {name: sum(channel.stream_sizes(name)) for name in names}

    def dead_letter_queue(self) -> Queue:
        return Queue(DEAD_LETTER_QUEUE, exchange="", routing_key=DEAD_LETTER_QUEUE, durable=True)

    def topology_editor(self, connection: Connection) -> RedisTopologyEditor:
        return RedisTopologyEditor(connection.default_channel, active_within=settings.BUS_REDIS_VISIBILITY_TIMEOUT)

    def own_queues(self, contexts=()) -> list[Queue]:
        return [self.dead_letter_queue()]
