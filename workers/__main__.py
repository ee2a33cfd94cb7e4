"""``python -m workers <context> [celery worker options]``: one context's worker."""

import logging
import os
import sys
import time
from pathlib import Path

#: The folder holding config and messaging (see manage.py).
PLATFORM_DIR = Path(__file__).resolve().parents[1] / "platform"
#: Seconds between looks at the broker while a worker that may not declare the topology waits for it.
TOPOLOGY_WAIT = 5.0


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit("usage: python -m workers <context> [celery worker options]")
    context, extra = argv[0], argv[1:]
    sys.path.insert(0, str(PLATFORM_DIR))
    # Read by the settings before Django starts: which handlers this process runs.
    os.environ["BUS_CONTEXT"] = context
    # The context's own broker user, where it has one (least privilege: manage.py bus_permissions):
    # the whole process, Celery and its retries, connects as that user. The name is
    # messaging.broker_permissions.url_variable's, which cannot be imported before Django starts.
    role_url = os.environ.get(f"BUS_BROKER_URL_{context.upper()}")
    if role_url:
        os.environ["CELERY_BROKER_URL"] = role_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    # A worker serves no pages: DEBUG would only log every query (and grow).
    os.environ.setdefault("DJANGO_DEBUG", "false")

    import django

    django.setup()
    from messaging.log_context import set_process_role

    set_process_role("worker")
    refuse_to_start_on_check_errors()

    from messaging import tracing

    # Before the pool forks: each pool process starts its own span exporter after it.
    tracing.configure(f"{context}-worker")

    from celery.bin.celery import celery as celery_command

    from config.celery_app import app
    from messaging.registry import registry
    from messaging.topology import Topology

    if context not in registry.contexts():
        sys.exit(f"unknown context {context!r}; contexts with handlers: {', '.join(registry.contexts())}")
    topology = Topology()
    # The whole topology, not only this context's queues: the retry queues this
    # worker publishes to must exist before its first retry, relay or no relay.
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=None, errback=_say_broker_unreachable(connection))
        declared = _declare_or_wait(topology, connection)
    if not declared:
        least_privilege(app, topology.context_queues(context), extra)
    queues = ",".join(queue.name for queue in topology.context_queues(context))
    # Instead of Celery's banner (some thirty lines per worker, every task of every
    # context listed): what this worker consumes, where, in one line.
    logging.getLogger("workers").info("%s worker consuming %s from %s", context, queues, connection.as_uri())
    # Celery's command line in standalone mode exits with the worker's exit code;
    # app.worker_main() drops it, so a worker that stopped on an error exited 0.
    celery_command.main(args=[
        "--app=config.celery_app:app",
        "--quiet",  # no banner
        "worker",
        f"--queues={queues}",
        # Unique per process: a second worker under a name still held fails to start.
        f"--hostname={context}.{os.getpid()}@%h",
        "--loglevel=INFO",
        *extra,
    ], prog_name="python -m workers", standalone_mode=True)


def _declare_or_wait(topology, connection) -> bool:
    """Declare the topology, or, where this worker's broker user may not, wait until it is there.
    Returns whether it declared it."""
    from messaging.topology import TopologyMissingError

    logger = logging.getLogger("workers")
    while True:
        try:
            return topology.declare_where_allowed(connection)
        except TopologyMissingError as exc:
            logger.error("%s; checking again in %.0fs", exc, TOPOLOGY_WAIT)
            time.sleep(TOPOLOGY_WAIT)


def least_privilege(app, own_queues, extra: list[str]) -> None:
    """Run Celery as a broker user that may only consume ``own_queues`` (``messaging.broker_permissions``).

    Celery declares every queue it consumes, with its exchange and bindings, each time it
    connects: that needs configure rights on the command and event exchanges, which would let
    this user delete them. The queues exist (checked just now), so Celery only consumes them.
    Mingle asks every worker for its state by publishing to the remote-control exchange, a
    right that would let this user shut down every other context's workers; gossip reads
    every worker's task events, other contexts' messages among them. The bus uses neither.
    """
    names = {queue.name for queue in own_queues}
    for queue in app.conf.task_queues:
        if queue.name in names:
            queue.no_declare = True
    for option in ("--without-mingle", "--without-gossip"):
        if option not in extra:
            extra.append(option)
    logging.getLogger("workers").info("its broker user may not declare the topology: found it declared; "
                                      "consuming without declaring, without mingle and gossip")


def refuse_to_start_on_check_errors() -> None:
    """Django's system checks, as ``manage.py check`` runs them: on an error (two handlers
    for one command, say) the worker exits non-zero with the same message, before it
    consumes anything; warnings are printed and the worker starts."""
    from django.core.management.base import BaseCommand, SystemCheckError

    try:
        BaseCommand().check()
    except SystemCheckError as error:
        sys.exit(str(error))


def _say_broker_unreachable(connection):
    logger = logging.getLogger("workers")

    def errback(exc, interval):
        # as_uri() masks the password.
        logger.error("cannot reach the broker at %s: %s; retrying in %.0fs", connection.as_uri(), exc, interval)

    return errback


if __name__ == "__main__":
    main(sys.argv[1:])
