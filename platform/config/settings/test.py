"""Tests: the local settings plus whatever the test setup exports."""

from .local import *  # noqa: F403
from .local import env

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
#: Retry quickly in tests (the schedule itself is unit-tested), unless told otherwise.
BUS_RETRY_BACKOFF = env.float("BUS_RETRY_BACKOFF", default=0.1)
BUS_RETRY_BACKOFF_MAX = env.float("BUS_RETRY_BACKOFF_MAX", default=0.5)
