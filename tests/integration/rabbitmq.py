"""RabbitMQ's own view of things, through rabbitmqctl."""

import json
import subprocess

from django.conf import settings


def rabbitmqctl(*args: str) -> list[dict]:
    """Run a ``rabbitmqctl list_*`` command on the test vhost; rows as dicts."""
    vhost = settings.CELERY_BROKER_URL.rsplit("/", 1)[-1] or "/"
    out = subprocess.run(
        ["rabbitmqctl", "-q", *args, "-p", vhost, "--formatter", "json"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return json.loads(out)
