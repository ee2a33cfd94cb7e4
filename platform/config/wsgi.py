"""The web entry point (gunicorn ``config.wsgi:application``): production settings
unless ``DJANGO_SETTINGS_MODULE`` says otherwise, as cookiecutter-django's does."""

import os

import django
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

django.setup(set_prefix=False)
from messaging import tracing  # noqa: E402 (needs the apps loaded)

# Before the application loads its middleware, which the instrumentation adds to.
if tracing.configure("web"):
    tracing.instrument_django()

application = get_wsgi_application()

from messaging.log_context import set_process_role  # noqa: E402 (once the settings are named)

set_process_role("web")
