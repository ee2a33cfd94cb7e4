"""The basket context's own settings, read as ``apps/payment/app_settings.py`` reads payment's.

The checkout deadline is the basket's: ``basket_checkout`` schedules ordering's
``ExpireOrder`` that much later, and ordering acts on it when it arrives.
"""

from datetime import timedelta

from django.conf import settings

from config.environment import env_duration

_CHECKOUT_DEADLINE = env_duration("CHECKOUT_DEADLINE", default=timedelta(minutes=15))


def checkout_deadline() -> timedelta:
    """How long a checkout may take: an order not paid or cancelled by then is cancelled,
    and a basket still waiting for it reopens (``ordering.ExpireOrder``)."""
    return getattr(settings, "CHECKOUT_DEADLINE", _CHECKOUT_DEADLINE)
