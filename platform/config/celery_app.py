"""The Celery application shared by the web, the relay and every worker.

Configuration comes from Django settings under the ``CELERY_`` namespace; the
queues and message tasks are derived from the message registry when Django's
apps are ready (see ``messaging.apps``).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
