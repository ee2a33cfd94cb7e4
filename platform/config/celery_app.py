"""The Celery application shared by the web, the relay and every worker.

Configuration comes from Django settings under the ``CELERY_`` namespace; the
queues and message tasks are derived from the message registry when Django's
apps are ready (see ``messaging.apps``).
"""

from celery import Celery, signals

# No default DJANGO_SETTINGS_MODULE here: importing ``config.wsgi`` imports this
# module first, and a default of local settings would win over the production
# default of the web entry point. Every entry point names its settings.
app = Celery("platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
#: Celery's Django fixup closes every database connection before and after each
#: task unless this is set (it ignores CONN_MAX_AGE, and reads only this old-style
#: key): a new connection per message cost more than handling it. With it, the
#: fixup reconnects every this-many tasks; broken connections are replaced below.
app.conf.CELERY_DB_REUSE_MAX = 1000
app.autodiscover_tasks()


@signals.task_prerun.connect
def _replace_broken_database_connections(**kwargs) -> None:
    """What Django does at each request: drop a connection that failed or outlived CONN_MAX_AGE."""
    from django.db import close_old_connections

    close_old_connections()
