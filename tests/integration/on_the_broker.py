"""Messages put on, taken from and counted on any broker, through its adapter.

What a test does to a broker by hand, as a stranger or a dying worker would,
written once for every broker: each call opens a connection of its own with
the adapter (``broker.connection()``: the bus's transport and options), never
the test process's Celery app, which is configured for the session's broker.
"""

from __future__ import annotations

from django.conf import settings
from kombu import Queue

from messaging.brokers.base import DEFAULT_EXCHANGE, Broker, publish_envelope
from messaging.topology import command_queue_name
from tests.polling import wait_for


def put(broker: Broker, body, *, routing_key: str, **options) -> None:
    """Publish a message as it is to one queue, through the default exchange: as a stranger would."""
    with broker.connection() as connection:
        connection.Producer().publish(body, exchange=DEFAULT_EXCHANGE, routing_key=routing_key, **options)


def publish(broker: Broker, envelope: dict, *, exchange=DEFAULT_EXCHANGE, routing_key: str) -> None:
    """Publish ``envelope`` as the bus's task message, as the relay would (without its confirms)."""
    with broker.connection() as connection:
        publish_envelope(connection.Producer(), envelope, exchange=exchange, routing_key=routing_key)


def queue_depth(broker: Broker, name: str) -> int:
    """Messages a queue holds, as the adapter counts them (none if there is no such queue)."""
    with broker.connection() as connection:
        return broker.queue_depths(connection.channel(), [name])[name]


def returned_until_the_broker_gives_up(broker: Broker, envelope: dict, context: str) -> int:
    """Deliver ``envelope`` from a queue like every context's, named for ``context``, and give it
    back as a worker dying with it would, until the broker hands it out no more (it has
    dead-lettered it); return how often it was handed out (``BUS_DELIVERY_LIMIT`` + 1 where the
    broker keeps the limit; one more than that where it does not).

    The queue is consumed here by hand, so no worker runs the message; it is deleted afterwards.
    """
    name = command_queue_name(context)
    poisoned = Queue(name, exchange=DEFAULT_EXCHANGE, routing_key=name, durable=True,
                     queue_arguments=broker.queue_arguments())
    handed_out = 0
    with broker.connection() as connection:
        queue = poisoned(connection.channel())
        queue.declare()
        try:
            publish(broker, envelope, routing_key=name)
            while handed_out <= settings.BUS_DELIVERY_LIMIT + 1:
                message = wait_for(lambda: queue.get(no_ack=False) or queue_depth(broker, name) == 0,
                                   timeout=10, message=f"the message back in {name}, or dead-lettered")
                if message is True:
                    break
                handed_out += 1
                message.reject(requeue=True)
        finally:
            queue.delete()
    return handed_out
