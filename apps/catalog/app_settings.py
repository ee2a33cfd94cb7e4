"""The catalog context's own settings, read as ``apps/payment/app_settings.py`` reads payment's."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from pydantic import TypeAdapter, ValidationError
from pydantic_extra_types.currency_code import ISO4217

from config.environment import env

_CURRENCY_TEXT = env.str("CATALOG_CURRENCY", default="EUR")
try:
    _CURRENCY = TypeAdapter(ISO4217).validate_python(_CURRENCY_TEXT)
except ValidationError:
    raise ImproperlyConfigured(
        f"CATALOG_CURRENCY={_CURRENCY_TEXT!r} is not an ISO 4217 currency code: use EUR, USD, ..."
    ) from None


def currency() -> str:
    """The currency of the catalog's prices (ISO 4217).

    Also what a consumer reads a ``ProductPriceChanged`` of version 1 in: that
    version named no currency, and every price was the catalog's.
    """
    return getattr(settings, "CATALOG_CURRENCY", _CURRENCY)
