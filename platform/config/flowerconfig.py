"""Flower's configuration file: ``celery -A config flower --conf=platform/config/flowerconfig.py``.

Flower exempts ``/metrics`` from its own login (its docs/auth.rst: "/healthcheck
and /metrics are exempt from authentication"), so anyone who reaches the port
reads every task and worker name and count. Here the metrics page asks for the
same login as every other page (a Prometheus scrape job sends it as
``basic_auth``), and Flower refuses to start without a login at all.
``/healthcheck`` stays open: it answers "OK" and nothing else.

Flower inspects workers (stats, queues, registered tasks: ``/api/workers``, each
worker's page) once, when it starts, and again only on a refresh; started before
the workers, as ``run_platform`` and docker-compose start it, it knew none of them
(mher/flower#1139). Here a worker is inspected as soon as Flower hears from it.

On Redis, Flower's Broker page (and ``/api/queues/length``) answered "'redis'
broker is not supported": it takes the broker's address from the Celery app's
connection, whose URI names the bus's transport class
(``messaging.brokers.redis:Transport://…``). Here it takes ``broker_url``. And
the bus keeps each Redis queue in a stream (``messaging.brokers.redis``), which
Flower's ``LLEN`` is refused on: here it counts with ``XLEN``, the messages
waiting and those taken and not acked yet, as RabbitMQ's count does. Through
Sentinel (``sentinel://h1:26379;sentinel://h2:26379``) Flower read the URL as one
address (its database number "0;sentinel://...") and asked one sentinel: here it
asks every sentinel the URL names.

Flower executes this file after reading its command line and ``FLOWER_*``
variables, so the login options are known here.
"""

import signal
from urllib.parse import urlsplit

import tornado.web
from flower.app import Flower
from flower.command import sigterm_handler
from flower.utils import broker as flower_broker
from flower.utils.broker import RedisBase
from flower.views.monitor import Metrics
from tornado.options import options

from messaging.brokers.base import failover_addresses, masked_url
from messaging.log_context import set_process_role

set_process_role("flower")  # its lines name it (in JSON: BUS_LOG_FORMAT=json)

if not (options.basic_auth or options.auth):
    raise SystemExit("Flower needs a login: --basic-auth=user:password (or FLOWER_BASIC_AUTH), or OAuth with --auth")

Metrics.get = tornado.web.authenticated(Metrics.get)

# Ctrl-C stops Flower as SIGTERM does (Flower's own handler, an orderly exit): left to
# Python's KeyboardInterrupt, a SIGINT arriving while Flower first inspected the workers
# (a second after its start) once kept it running past 15 s (tests/e2e/test_stop_signals.py).
signal.signal(signal.SIGINT, sigterm_handler)

_start = Flower.start


def _start_inspecting_workers_as_they_come(flower: Flower) -> None:
    """``Flower.start``, and each worker Flower has not inspected is inspected on its
    next event (``worker-online`` at its start, then a heartbeat every two seconds):
    one that did not answer in time is asked again on the next."""
    receive = flower.events.on_event  # runs in the event receiver's thread

    def on_event(event):
        receive(event)
        if event.get("type") in ("worker-online", "worker-heartbeat"):
            flower.io_loop.add_callback(_inspect_if_unknown, flower, event["hostname"])

    flower.events.on_event = on_event
    _start(flower)


def _inspect_if_unknown(flower: Flower, name: str) -> None:
    if name not in flower.inspector.workers:
        flower.update_workers(workername=name)  # at most one inspection per worker at a time


Flower.start = _start_inspecting_workers_as_they_come


# Every node's password masked, a failover URL's too (kombu's masks only the first node's).
Flower.broker_uri = property(lambda flower: masked_url(flower.capp.conf.broker_url))
Flower.broker_uri_with_password = property(lambda flower: flower.capp.conf.broker_url)


async def _stream_lengths(broker: RedisBase, names) -> list[dict]:
    """``RedisBase.queues`` for the bus's streams: each queue's messages, from ``XLEN``."""
    names = list(names)
    try:
        async with broker.redis.pipeline() as pipeline:
            for name in names:
                pipeline.xlen(broker.broker_prefix + name)
            lengths = await pipeline.execute(raise_on_error=False)
        # A name that is no stream (nothing declared it yet, or not the bus's) holds nothing.
        return [{"name": name, "messages": length if isinstance(length, int) else 0}
                for name, length in zip(names, lengths, strict=True)]
    finally:
        await broker.redis.aclose()


RedisBase.queues = _stream_lengths


class _EverySentinel(flower_broker.RedisSentinel):
    """Flower's Sentinel broker, on every sentinel of the URL (each an address of its own)."""

    def __init__(self, broker_url, *args, **kwargs):
        self.sentinel_addresses = [(urlsplit(address).hostname, urlsplit(address).port or 26379)
                                   for address in failover_addresses(broker_url)]
        super().__init__(failover_addresses(broker_url)[0], *args, **kwargs)

    def _get_redis_client(self, broker_options, broker_use_ssl):
        client = super()._get_redis_client(broker_options, broker_use_ssl)  # on the first sentinel
        manager = client.connection_pool.sentinel_manager
        manager.sentinels = [type(manager.sentinels[0])(host=host, port=port, **manager.sentinel_kwargs)
                             for host, port in self.sentinel_addresses]
        return client


flower_broker.RedisSentinel = _EverySentinel  # what flower.utils.broker.Broker makes for sentinel://
