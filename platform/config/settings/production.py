"""Production: real RabbitMQ and PostgreSQL, every secret from the environment.

There are no defaults for credentials here: a missing or empty variable stops the
process at start-up, naming it, instead of running with a guessable secret.
"""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from config.environment import url_with_password

from .base import MIDDLEWARE, database, env, relay_poll_interval


def required(name: str) -> str:
    """The variable's value; missing ("Set the … environment variable", django-environ's words) or blank stops here."""
    value = env.str(name)
    if not value.strip():
        # Set but empty (an unfilled .env line) must stop the process like a missing one.
        raise ImproperlyConfigured(f"Set the {name} environment variable: it is empty")
    return value


# GENERAL
#: Never: a traceback page shows settings and code to whoever caused the error.
DEBUG = False
#: Signs sessions and CSRF tokens: a guessable one lets anyone forge an admin session.
SECRET_KEY = required("DJANGO_SECRET_KEY")
#: The host names this site answers to; requests for others are refused.
ALLOWED_HOSTS = env.parse_value(required("DJANGO_ALLOWED_HOSTS"), list)

# DATABASES
#: Carries the database password, or DATABASE_PASSWORD does (any characters, URL-encoded into
#: the URL here: docker-compose passes it so): no default.
DATABASES = {"default": database(url_with_password(required("DATABASE_URL"), env.str("DATABASE_PASSWORD", default="")))}
#: As the database can be nudged: PostgreSQL tells the relay of new rows, SQLite cannot.
BUS_RELAY_POLL_INTERVAL = relay_poll_interval(DATABASES["default"])

# CELERY
#: Carries the broker password, or CELERY_BROKER_PASSWORD does (any characters, URL-encoded
#: into every address of the URL here): no default.
CELERY_BROKER_URL = url_with_password(required("CELERY_BROKER_URL"), env.str("CELERY_BROKER_PASSWORD", default=""))

# SECURITY
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True

# STATIC FILES
# https://whitenoise.readthedocs.io/en/stable/django.html
#: gunicorn serves no files: WhiteNoise serves STATIC_ROOT (collected at image build) from
#: the WSGI app, right after the security middleware, as its documentation says.
MIDDLEWARE = list(MIDDLEWARE)  # a copy: base's list stays as it is
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "whitenoise.middleware.WhiteNoiseMiddleware")
#: Hashed names (cached for a year by browsers) and compressed copies of each file.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
#: A page naming a file that was not collected links the plain name (a 404 for that file)
#: instead of failing whole: an operator in an incident needs the page more than its style.
WHITENOISE_MANIFEST_STRICT = False
