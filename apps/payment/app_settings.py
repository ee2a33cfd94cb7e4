"""The payment context's own settings, which the platform's (``config.settings``) never name.

Each is a function, read when used as Django apps read theirs (django-allauth's
``app_settings``): the Django setting of its name if a settings module or a test sets it
(``override_settings``), else its environment variable, read at import so that a bad value
stops the process at start, else its default. Not an ``AppConfig`` attribute: that is
fixed when the class is made, out of a test's reach.
"""

from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.environment import env

_APPROVAL_LIMIT_TEXT = env.str("PAYMENT_APPROVAL_LIMIT", default="10000.00")
try:
    _APPROVAL_LIMIT = Decimal(_APPROVAL_LIMIT_TEXT)
except InvalidOperation:
    raise ImproperlyConfigured(f"PAYMENT_APPROVAL_LIMIT={_APPROVAL_LIMIT_TEXT!r} is not an amount: use 10000.00") from None


def approval_limit() -> Decimal:
    """Payments above this amount are declined by the reference payment context."""
    return getattr(settings, "PAYMENT_APPROVAL_LIMIT", _APPROVAL_LIMIT)
