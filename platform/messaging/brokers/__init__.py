"""The brokers the bus runs on: one adapter each, chosen by the broker URL's scheme.

- ``amqp://`` RabbitMQ (``messaging.brokers.rabbitmq``): for production;
- ``redis://`` Redis (``messaging.brokers.redis``): for production, a stream
  per queue, with the bus's own fan-out, delivery limit and dead-letter queue;
- ``sentinel://`` Redis with Sentinel (``messaging.brokers.sentinel``): the same,
  on the primary the sentinels name, a publish confirmed once a replica has it;
- ``filesystem://`` the embedded broker (``messaging.brokers.embedded``): for
  trying the platform, with no external service.

``current()`` is the adapter of ``CELERY_BROKER_URL``; the Celery app takes its
transport and options from it (``config.celery_app``). What each broker
promises is in the docs' broker table (docs/reference/brokers.md), and ``Broker``'s flags say it to code.
"""

from __future__ import annotations

import urllib.parse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from messaging.brokers.base import Broker, Outgoing

#: The adapter of each broker URL scheme.
ADAPTERS = {
    "amqp": "messaging.brokers.rabbitmq.RabbitMQ",
    "amqps": "messaging.brokers.rabbitmq.RabbitMQ",
    "pyamqp": "messaging.brokers.rabbitmq.RabbitMQ",
    "redis": "messaging.brokers.redis.Redis",
    "rediss": "messaging.brokers.redis.Redis",
    "sentinel": "messaging.brokers.sentinel.RedisSentinel",
    "filesystem": "messaging.brokers.embedded.Embedded",
}

_adapters: dict[str, Broker] = {}


def for_url(url: str) -> Broker:
    """The adapter for the broker at ``url``."""
    if url not in _adapters:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ADAPTERS:
            raise ImproperlyConfigured(
                f"CELERY_BROKER_URL: the bus runs on {', '.join(sorted({s + '://' for s in ADAPTERS}))}, "
                f"not {scheme}://"
            )
        _adapters[url] = import_string(ADAPTERS[scheme])(url, data_dir=settings.BUS_DATA_DIR)
    return _adapters[url]


def current() -> Broker:
    """The adapter for the platform's broker (``CELERY_BROKER_URL``)."""
    return for_url(settings.CELERY_BROKER_URL)


def publish_confirmed(messages: list[Outgoing]) -> None:
    """Publish a few messages on a connection of their own; raise unless the broker has all.

    For the occasional message (a retry); a steady stream goes through one
    long-lived publisher, as the relay's does.
    """
    broker = current()
    with broker.connection() as connection:
        broker.publisher(connection.default_channel, timeout=settings.BUS_CONFIRM_TIMEOUT).publish_all(messages)
