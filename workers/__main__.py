"""``python -m workers <context> [celery worker options]``: one context's worker."""

import os
import sys
from pathlib import Path

#: The folder holding config and messaging (see manage.py).
PLATFORM_DIR = Path(__file__).resolve().parents[1] / "platform"


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit("usage: python -m workers <context> [celery worker options]")
    context, extra = argv[0], argv[1:]
    sys.path.insert(0, str(PLATFORM_DIR))
    # Read by the settings before Django starts: which handlers this process runs.
    os.environ["BUS_CONTEXT"] = context
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    # A worker serves no pages: DEBUG would only log every query (and grow).
    os.environ.setdefault("DJANGO_DEBUG", "false")

    import django

    django.setup()

    from config.celery_app import app
    from messaging.registry import registry
    from messaging.topology import Topology

    if context not in registry.contexts():
        sys.exit(f"unknown context {context!r}; contexts with handlers: {', '.join(registry.contexts())}")
    topology = Topology()
    # The whole topology, not only this context's queues: the retry queues this
    # worker publishes to must exist before its first retry, relay or no relay.
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=None)
        topology.declare(connection.default_channel)
    queues = ",".join(queue.name for queue in topology.context_queues(context))
    app.worker_main([
        "worker",
        f"--queues={queues}",
        # Unique per process: a second worker under a name still held fails to start.
        f"--hostname={context}.{os.getpid()}@%h",
        "--loglevel=INFO",
        *extra,
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
