"""The Celery worker consumer the platform's workers run (setting ``worker_consumer``)."""

from celery.worker.consumer import Consumer as CeleryConsumer


class Consumer(CeleryConsumer):
    """Celery's consumer without its native delayed delivery.

    Celery switches that on whenever it sees quorum queues: it declares 28
    exchanges and queues and binds every exchange of ours to them, so that a
    delayed task re-enters through its original exchange, which for an event
    is the fanout to every subscriber. Retries wait in the bus's own retry
    queues instead (``Topology.retry_route``).
    """

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [
            step for step in CeleryConsumer.Blueprint.default_steps if not step.endswith(":DelayedDelivery")
        ]
