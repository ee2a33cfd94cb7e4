"""The basket context's own settings: knobs of this context, not of the platform.

Each is a function read when used, the way Django apps read theirs (django-allauth's
``app_settings``, DRF's ``api_settings``): ``settings.CHECKOUT_DEADLINE`` when a
settings module or a test sets it (``override_settings``), else the environment
variable of the same name, read once at import so that a bad value stops the process
at start, else the default here. Not an ``AppConfig`` attribute: that is fixed when
the class is made, out of reach of a test's override. ``config.settings`` never names it.

The checkout deadline is the basket's: ``basket_checkout`` schedules ordering's
``ExpireOrder`` that much later (ordering only acts on it when it arrives).
"""

from datetime import timedelta

from django.conf import settings

from config.environment import env_duration

_CHECKOUT_DEADLINE = env_duration("CHECKOUT_DEADLINE", default=timedelta(minutes=15))


def checkout_deadline() -> timedelta:
    """How long a checkout may take: an order not paid or cancelled by then is cancelled,
    and a basket still waiting for it reopens (``ordering.ExpireOrder``)."""
    return getattr(settings, "CHECKOUT_DEADLINE", _CHECKOUT_DEADLINE)
