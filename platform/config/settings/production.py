"""Production: real RabbitMQ and PostgreSQL, every secret from the environment.

There are no defaults for credentials here: a missing variable stops the
process at start-up instead of running with a guessable secret.
"""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY")
if not SECRET_KEY.strip():
    # Set but empty (an unfilled .env line) must stop the process like a missing one.
    raise ImproperlyConfigured("Set the DJANGO_SECRET_KEY environment variable: it is empty")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
BUS_EMBEDDED_BROKER = False
CELERY_BROKER_TRANSPORT_OPTIONS = {}

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
MIDDLEWARE = list(MIDDLEWARE)  # noqa: F405  (a copy: base's list stays as it is)
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
