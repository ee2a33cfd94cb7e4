import pytest

# The `bus` fixture users test their contexts with (an in-memory bus on the test database).
pytest_plugins = ["messaging.testing"]


@pytest.fixture
def catalog_product(db):
    """A product with stock, for flows that need one."""
    from decimal import Decimal

    from apps.catalog.services import product_create

    return product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)


@pytest.fixture
def payment_dead_letter(catalog_product, bus):
    """A checkout of one mug whose payment was dead-lettered by a provider outage
    (``PAYMENT_PROVIDER_OUTAGE``): the tutorial's failure, for the repair tests."""
    from decimal import Decimal

    from django.test import override_settings

    from apps.basket.services import basket_add_item, basket_checkout
    from messaging.models import DeadLetter

    basket_add_item(customer_id="c1", sku=catalog_product.sku, quantity=1, unit_price=Decimal("10.00"))
    basket_checkout(customer_id="c1")
    with override_settings(PAYMENT_PROVIDER_OUTAGE=True):
        bus.run_until_quiet()
    return DeadLetter.objects.get()
