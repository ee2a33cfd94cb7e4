# The `bus` fixture users test their contexts with (an in-memory bus on the test database).
pytest_plugins = ["messaging.testing"]


import pytest


@pytest.fixture
def catalog_product(db):
    """A product with stock, for flows that need one."""
    from decimal import Decimal

    from apps.catalog.services import product_create

    return product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
