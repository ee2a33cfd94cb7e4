"""The web entry point (gunicorn ``config.wsgi:application``): production settings
unless ``DJANGO_SETTINGS_MODULE`` says otherwise, as cookiecutter-django's does."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

application = get_wsgi_application()

from messaging.log_context import set_process_role  # noqa: E402 (once the settings are named)

set_process_role("web")
