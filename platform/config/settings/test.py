"""Tests: the base settings, on the embedded default unless the test setup names services.

With no variable set, SQLite and the filesystem broker in ``BUS_DATA_DIR`` (``tests/unit``
needs nothing else); ``scripts/test`` exports ``DATABASE_URL`` and ``CELERY_BROKER_URL``
for RabbitMQ and PostgreSQL. Processes the tests start (workers, the relay) load these too.
"""

from .base import *  # noqa: F403
from .base import BUS_DATA_DIR, database, env, relay_poll_interval

# GENERAL
#: Tracebacks from the processes the tests start (pytest-django turns it off in the tests themselves).
DEBUG = env.bool("DJANGO_DEBUG", default=True)
#: Public on purpose: nothing a test signs is worth protecting.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="test-only-insecure-secret-key-do-not-deploy")
#: This machine only (Django's test client adds its own ``testserver``).
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
#: Hashing passwords slowly protects nothing in a test and costs every login.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# DATABASES
#: SQLite in BUS_DATA_DIR unless DATABASE_URL names another (scripts/test: PostgreSQL);
#: pytest-django makes its test database beside it (``base.database()``).
DATABASES = {"default": database(env.str("DATABASE_URL", default=f"sqlite:///{BUS_DATA_DIR / 'platform.sqlite3'}"))}
#: Quick on SQLite, where polling is the relay's only way to hear of new rows.
BUS_RELAY_POLL_INTERVAL = relay_poll_interval(DATABASES["default"])

# CELERY
#: The embedded broker's folders in BUS_DATA_DIR unless CELERY_BROKER_URL names another
#: (scripts/test: RabbitMQ). A host its transport ignores: kombu warns without one.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")

# MESSAGING
#: Retry quickly in tests (the schedule itself is unit-tested), unless told otherwise.
BUS_RETRY_BACKOFF = env.float("BUS_RETRY_BACKOFF", default=0.1)
BUS_RETRY_BACKOFF_MAX = env.float("BUS_RETRY_BACKOFF_MAX", default=0.5)
