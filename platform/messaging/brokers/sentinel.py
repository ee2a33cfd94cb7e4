"""Redis with Sentinel: the bus's stream transport (``messaging.brokers.redis``) on
whichever Redis the sentinels name as primary, found again after a failover; a
publish counts only once a replica has it too.

``CELERY_BROKER_URL=sentinel://[:password@]host:26379/0;sentinel://host2:26379/0;...``
names the sentinels (kombu's form) and ``BUS_REDIS_SENTINEL_MASTER`` the primary
they watch. Each connection asks a sentinel where the primary is; one that loses
it (the primary died) or finds it demoted (``READONLY``) is dropped, and the
process reconnects as after any broker outage, to the replica Sentinel promoted.

Redis replicates asynchronously: a write the primary answered may not have
reached the replica when the primary dies, and the promoted replica never had
it. So every batch the bus publishes (the relay's rows, a worker's retries) ends
with ``WAIT``, on the same connection, and counts as confirmed only once
``BUS_REDIS_REPLICAS_TO_CONFIRM`` replicas have every write of it; else the batch
fails as an unconfirmed one does (``ConfirmTimeoutError``): the relay leaves its
rows unpublished and sends them again. A failover loses no message the bus
counted as published. What it may lose is the primary's last writes of other
kinds, and each comes back: a take (the message is handed out again), an ack
(the message is delivered again, and the inbox absorbs it), a move back to a
queue or to the dead letters (the message stays pending, and the visibility
timeout gives it back). Redis replicates in order, so the promoted replica holds
every write up to some point, and each of those is a whole step (a script runs
as one).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from kombu.transport import redis as kombu_redis

from messaging.brokers import redis
from messaging.brokers.base import ConfirmTimeoutError, failover_addresses


class ReplicationTimeoutError(ConfirmTimeoutError):
    """Fewer replicas than required had a published batch in time: a failover could lose it."""


class ReplicatedPublishBatch(kombu_redis.PublishBatch):
    """kombu's publish batch (one pipeline), ended by ``WAIT``: its flush raises unless
    ``replicas`` replicas acknowledged every write the batch made."""

    def __init__(self, channel, max_size, *, replicas: int, timeout_ms: int) -> None:
        super().__init__(channel, max_size)
        self.replicas, self.timeout_ms = replicas, timeout_ms

    def flush(self) -> None:
        # kombu's flush, which drops the pipeline's replies: WAIT's is read here. WAIT
        # counts the writes of its own connection, so it must travel in the same pipeline.
        self._check_usable()
        if not self._buffered:
            return
        self.pipeline.wait(self.replicas, self.timeout_ms)
        try:
            *_, replicated = self.pipeline.execute()
        except BaseException as exc:
            self._failed, self._buffered = exc, 0
            self.pipeline.reset()
            if isinstance(exc, Exception):
                raise kombu_redis.BatchPublishError("Redis publish batch failed; delivery is uncertain") from exc
            raise
        self._buffered = 0
        if replicated < self.replicas:
            self._failed = ReplicationTimeoutError(
                f"{replicated} of the {self.replicas} replica(s) required had the batch after "
                f"{self.timeout_ms} ms: not counted as published (BUS_REDIS_REPLICAS_TO_CONFIRM)")
            raise self._failed


class Channel(redis.Channel, kombu_redis.SentinelChannel):
    """The bus's stream channel on the primary kombu's sentinel channel finds."""

    from_transport_options = kombu_redis.SentinelChannel.from_transport_options + ("replicas_to_confirm",)
    #: Replicas that must have a published batch before it counts (``WAIT``); 0: none.
    replicas_to_confirm = 1

    def create_publish_batch(self, max_size):
        if not self.replicas_to_confirm:
            return super().create_publish_batch(max_size)
        # Well inside the socket timeout (the confirm timeout), so WAIT answers before it.
        timeout_ms = max(1, int((self.socket_timeout or 2) * 1000 / 2))
        return ReplicatedPublishBatch(self, max_size, replicas=self.replicas_to_confirm, timeout_ms=timeout_ms)


class Transport(redis.Transport):
    """The bus's Redis transport through Sentinel (``sentinel://`` URLs)."""

    Channel = Channel
    default_port = kombu_redis.SentinelTransport.default_port


class RedisSentinel(redis.Redis):
    transport = "messaging.brokers.sentinel:Transport"

    def describe(self) -> str:
        sentinels = ", ".join(urlsplit(address).netloc.rpartition("@")[2] + urlsplit(address).path
                              for address in failover_addresses(self.url))
        return f"primary '{settings.BUS_REDIS_SENTINEL_MASTER}' of the sentinels {sentinels}"

    def transport_options(self) -> dict:
        return {**super().transport_options(),
                # kombu's own error names the option when it is missing; manage.py check names the setting.
                **({"master_name": settings.BUS_REDIS_SENTINEL_MASTER} if settings.BUS_REDIS_SENTINEL_MASTER else {}),
                "replicas_to_confirm": settings.BUS_REDIS_REPLICAS_TO_CONFIRM}

    def configuration_problems(self) -> list:
        problems = super().configuration_problems()
        if not settings.BUS_REDIS_SENTINEL_MASTER:
            problems.append(checks.Error(
                "CELERY_BROKER_URL names Redis sentinels (sentinel://), but not the primary they watch: "
                "no process could find the broker.",
                hint="Set BUS_REDIS_SENTINEL_MASTER to the name of the primary in the sentinels' "
                     "configuration ('sentinel monitor <name> ...').",
                id="messaging.E013",
            ))
        return problems
