"""The payment context's own settings: knobs of this context, not of the platform.

Each is a function read when used, the way Django apps read theirs (django-allauth's
``app_settings``, DRF's ``api_settings``): ``settings.PAYMENT_APPROVAL_LIMIT`` when a
settings module or a test sets it (``override_settings``), else the environment
variable of the same name, read once at import so that a bad value stops the process
at start, else the default here. Not an ``AppConfig`` attribute: that is fixed when
the class is made, out of reach of a test's override. ``config.settings`` never names it.
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
