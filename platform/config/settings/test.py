"""Tests: the local settings plus whatever the test setup exports."""

from .local import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
#: Retry quickly in tests; the schedule itself is unit-tested.
BUS_RETRY_BACKOFF = 0.1
BUS_RETRY_BACKOFF_MAX = 0.5
