"""Reading the environment: django-environ's reader, and the durations it does not parse.

Every settings module reads through ``env``, and so do the contexts for their own
settings (``apps.*.app_settings``): one reader, one way to write a value.
"""

from datetime import timedelta

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.dateparse import parse_duration

env = environ.Env()


def env_duration(name: str, *, default: timedelta) -> timedelta:
    """A duration from the environment: seconds ("900"), "7 days", "01:30:00" or ISO 8601 ("PT15M")."""
    if name not in env.ENVIRON:
        return default
    duration = parse_duration(env.str(name).strip())
    if duration is None or duration < timedelta(0):
        raise ImproperlyConfigured(
            f"{name}={env.str(name)!r} is not a duration: use seconds (900), '7 days', '01:30:00' or 'PT15M'"
        )
    return duration
