"""The embedded default: no external service, for trying the platform out.

SQLite and the filesystem broker in ``BUS_DATA_DIR`` unless ``DATABASE_URL`` /
``CELERY_BROKER_URL`` name others, with what each kind needs (``base.database()``,
and the broker's adapter, ``messaging.brokers``). Never use these settings in production: the secret is public.
"""

from .base import *  # noqa: F403
from .base import BUS_DATA_DIR, database, env, relay_poll_interval

# GENERAL
#: Tracebacks in the browser while trying things out (the benchmarks turn them off).
DEBUG = env.bool("DJANGO_DEBUG", default=True)
#: Public on purpose: nothing signed with it is worth protecting (production has no default).
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="local-only-insecure-secret-key-do-not-deploy")
#: This machine only.
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

# DATABASES
#: A file in BUS_DATA_DIR: nothing to install or start.
DATABASES = {"default": database(env.str("DATABASE_URL", default=f"sqlite:///{BUS_DATA_DIR / 'platform.sqlite3'}"))}
#: Quick on SQLite, where polling is the relay's only way to hear of new rows.
BUS_RELAY_POLL_INTERVAL = relay_poll_interval(DATABASES["default"])

# CELERY
#: Folders in BUS_DATA_DIR. The URL names a host its transport ignores: without one kombu
#: warns "No hostname was supplied" at every connection of every process.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")
