"""The embedded default: no external service, for trying the platform out.

Filesystem broker and SQLite unless ``CELERY_BROKER_URL`` / ``DATABASE_URL``
say otherwise. Never use these settings in production: the secret is public.
"""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="local-only-insecure-secret-key-do-not-deploy")
