"""System checks: ``manage.py check`` fails on a registry mistake or a retention that forgets too soon."""

from django.conf import settings
from django.core import checks

from messaging.registry import registry
from messaging.retention import longest_redelivery


@checks.register("messaging")
def check_message_registry(app_configs, **kwargs):
    return [
        (checks.Warning if check_id.split(".")[1].startswith("W") else checks.Error)(message, id=check_id)
        for check_id, message in registry.problems()
    ]


@checks.register("messaging")
def check_inbox_outlasts_redelivery(app_configs, **kwargs):
    # An inbox row purged while its message can still come back lets the
    # message change things a second time.
    longest = longest_redelivery()
    if settings.BUS_INBOX_RETENTION >= longest:
        return []
    return [checks.Error(
        f"BUS_INBOX_RETENTION ({settings.BUS_INBOX_RETENTION}) is shorter than the longest redelivery "
        f"({longest}): a message coming back after its inbox row was purged would be handled again.",
        hint="Raise BUS_INBOX_RETENTION, or lower BUS_DEAD_LETTER_REPLAY_WINDOW, BUS_MAX_RETRIES, "
             "BUS_RETRY_BACKOFF_MAX, BUS_DELIVERY_LIMIT or CELERY_TASK_TIME_LIMIT "
             "(messaging.retention.longest_redelivery adds them up).",
        id="messaging.E010",
    )]
