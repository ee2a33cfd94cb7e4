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


#: What ``PAYMENT_PROVIDER_OUTAGE`` may say in the environment.
_SWITCH_VALUES = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}
_PROVIDER_OUTAGE_TEXT = env.str("PAYMENT_PROVIDER_OUTAGE", default="false")
try:
    _PROVIDER_OUTAGE = _SWITCH_VALUES[_PROVIDER_OUTAGE_TEXT.strip().lower()]
except KeyError:
    raise ImproperlyConfigured(
        f"PAYMENT_PROVIDER_OUTAGE={_PROVIDER_OUTAGE_TEXT!r} is not a switch: use true or false"
    ) from None


def provider_outage() -> bool:
    """A demonstration switch: while on, the payment provider is down, so every charge and refund
    fails (``PaymentProviderUnavailableError``), is retried, and ends as a dead letter to repair.
    Off by default; a worker reads it at start."""
    return getattr(settings, "PAYMENT_PROVIDER_OUTAGE", _PROVIDER_OUTAGE)
