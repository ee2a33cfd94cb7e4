"""The Celery application shared by the web, the relay and every worker.

Configuration comes from Django settings under the ``CELERY_`` namespace; the
queues and message tasks are derived from the message registry when Django's
apps are ready (see ``messaging.apps``). A worker takes its deliveries through
``messaging.worker.Consumer`` (the setting ``CELERY_WORKER_CONSUMER``), which
checks each one before Celery runs the message's task (``messaging.tasks``).
"""

import signal

from celery import Celery, signals
from kombu import compression

# No default DJANGO_SETTINGS_MODULE here: importing ``config.wsgi`` imports this
# module first, and a default of local settings would win over the production
# default of the web entry point. Every entry point names its settings.
app = Celery("platform")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_after_configure.connect
def _use_the_brokers_adapter(sender, **kwargs) -> None:
    """The broker's kombu transport and options are its adapter's (``messaging.brokers``),
    chosen by the URL: Redis's adds fan-out, a delivery limit and dead letters to kombu's."""
    from messaging import brokers

    broker = brokers.for_url(sender.conf.broker_url)  # the URL Celery itself took from the settings
    sender.conf.broker_transport = broker.transport
    sender.conf.broker_transport_options = broker.transport_options()


@app.on_after_configure.connect
def _json_logs_by_djangos_config(sender, **kwargs) -> None:
    """With ``BUS_LOG_FORMAT=json`` a worker keeps the logging Django configured (``LOGGING``),
    its pool processes with it: Celery would replace the root's handler with its own text
    lines. Its receiver being there is what stops Celery (the ``setup_logging`` signal)."""
    from django.conf import settings

    if settings.BUS_LOG_FORMAT == "json":
        signals.setup_logging.connect(_keep_djangos_logging, weak=False)


def _keep_djangos_logging(loglevel=None, **kwargs) -> None:
    import logging

    # What Celery does after configuring its own logging, less its formats: the worker's
    # --loglevel, and what is printed becomes log lines (JSON, not raw output among them).
    if loglevel:
        logging.getLogger().setLevel(loglevel)
    if app.conf.worker_redirect_stdouts:
        app.log.redirect_stdouts(app.conf.worker_redirect_stdouts_level)

#: Celery's Django fixup closes every database connection before and after each
#: task unless this is set (it ignores CONN_MAX_AGE, and reads only this old-style
#: key): a new connection per message cost more than handling it. With it, the
#: fixup reconnects every this-many tasks; broken connections are replaced below.
app.conf.CELERY_DB_REUSE_MAX = 1000
# No autodiscover_tasks(): no app has a tasks module. The bus's tasks, one per message
# type, are registered from the message registry (messaging.apps).


def _refuse_compressed(body):
    raise ValueError("compressed bodies are refused: the bus never compresses")


# kombu decompresses a body named compressed in its header as it receives it, before
# anything can look at it, without a size limit: a few hundred bytes of bzip2 became
# 300 MB. The bus never compresses, so every decoder refuses; kombu then reports a
# decode error, which the worker turns into a dead letter.
for _content_type in compression.encoders():
    compression.register(compression.get_encoder(_content_type)[0], _refuse_compressed, _content_type)


@signals.worker_process_init.connect
def _leave_sigterm_to_the_main_process(**kwargs) -> None:
    """A pool process ignores SIGTERM: its worker's main process decides when it stops.

    Supervisors signal the whole process group or cgroup (systemd's default
    ``KillMode=control-group``, GNU ``timeout``, Heroku), so SIGTERM reached the pool
    processes as well as the main one. Each exited at once, in the middle of its message,
    and one that died holding the pool queue's read lock left the main process's warm
    shutdown waiting for that lock in billiard's ``Pool._help_stuff_finish`` until SIGKILL
    (2 stops in 10 on the embedded broker; celery/celery#2839 is the same clash). Ignored
    here, a group's SIGTERM is a SIGTERM to the main process alone: the pool finishes the
    messages it holds and exits when the main process closes it. SIGINT is ignored already
    (Celery's pool initializer), and billiard leaves an ignored SIGTERM ignored
    (``billiard.common.reset_signals``). A time limit still ends a pool process (billiard
    follows SIGTERM with SIGKILL); a cold shutdown (Ctrl-C twice) lets running messages end.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@signals.worker_process_shutdown.connect
def _export_buffered_spans(**kwargs) -> None:
    """A pool process leaves by ``os._exit``: no exit hook would export its last spans."""
    from messaging import tracing

    tracing.flush()


@signals.task_prerun.connect
def _replace_broken_database_connections(**kwargs) -> None:
    """What Django does at each request: drop a connection that failed or outlived CONN_MAX_AGE."""
    from django.db import close_old_connections

    close_old_connections()
