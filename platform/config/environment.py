"""Reading the environment: django-environ's reader, and the durations it does not parse.

Every settings module reads through ``env``, and so do the contexts for their own
settings (``apps.*.app_settings``): one reader, one way to write a value.
"""

from datetime import timedelta
from urllib.parse import quote, urlsplit, urlunsplit

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


def url_with_password(url: str, password: str) -> str:
    """``url`` with ``password`` put in as its password, URL-encoded, in every address of a
    failover URL (``;``-separated); ``url`` as it is when ``password`` is empty.

    A password with ``/``, ``@``, ``:``, ``#`` or ``%`` written into a URL as it is breaks the
    URL, and docker-compose cannot encode one: it passes the password apart and this puts it in.
    """
    if not password:
        return url
    return ";".join(_address_with_password(address, password) for address in url.split(";"))


def _address_with_password(address: str, password: str) -> str:
    parts = urlsplit(address.strip())
    credentials, _, host = parts.netloc.rpartition("@")
    user = credentials.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))
