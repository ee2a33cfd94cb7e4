from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from messaging.registry import HANDLERS_MODULE, MESSAGES_MODULE


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Messaging"

    def ready(self):
        from celery import current_app

        from messaging import checks  # noqa: F401  (registers the system checks)
        from messaging.consumer import register_message_tasks
        from messaging.topology import Topology

        # Every context's contracts, then its handlers, like admin.autodiscover().
        autodiscover_modules(MESSAGES_MODULE, HANDLERS_MODULE)
        register_message_tasks(current_app)
        current_app.conf.task_queues = Topology().queues()
