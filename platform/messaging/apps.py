"""Where the bus is wired to Django and Celery, once every app is loaded.

``MessagingConfig.ready`` makes the joints no import shows:

- every context's ``messages`` then ``handlers`` module is imported
  (``autodiscover_modules``, as ``admin.autodiscover`` does): the handlers'
  decorators put them in ``messaging.registry.registry``; then the registry
  collects the contracts (every ``Command`` and ``Event`` subclass defined in
  an installed app), so both are complete before anything asks;
- one Celery task per handled message type is registered, named after the type
  (``messaging.tasks.register_message_tasks``): the task name on the wire is
  the message type;
- Celery's queues are the topology's (``Topology().queues()``), so a worker
  started with ``--queues`` knows their arguments (quorum, dead-letter exchange);
- the broker's adapter gets ready (the embedded broker makes its folders);
- the system checks of ``messaging.checks`` are registered.

The worker's consumer class is named in settings (``CELERY_WORKER_CONSUMER =
"messaging.worker:Consumer"``), not here: Celery reads it when a worker starts.
"""

import logging

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from messaging.registry import HANDLERS_MODULE, MESSAGES_MODULE

logger = logging.getLogger(__name__)


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Message bus"

    def ready(self):
        from celery import current_app

        from messaging import checks  # noqa: F401  (registers the system checks)
        from messaging import brokers
        from messaging.registry import registry
        from messaging.tasks import register_message_tasks
        from messaging.topology import Topology

        # Every context's contracts, then its handlers, like admin.autodiscover().
        autodiscover_modules(MESSAGES_MODULE, HANDLERS_MODULE)
        registry.collect_contracts()
        register_message_tasks(current_app)
        # Celery reads its configuration at first use, and takes the broker adapter's
        # transport then (config.celery_app): have it read now, while CELERY_BROKER_URL
        # is this process's own and not one a test points at another broker later.
        configured_broker = current_app.conf.broker_url
        logger.debug("Celery configured for %s", brokers.for_url(configured_broker).label)
        current_app.conf.task_queues = Topology().queues()
        brokers.current().prepare()

