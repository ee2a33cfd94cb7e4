"""The reference flows (``tests.flows``) across real processes: a worker per
context and the relay, RabbitMQ and PostgreSQL.

A broker added later gets a module like this one: a ``bus`` fixture giving the
contract a ``PlatformBus`` over processes started on that broker.
"""

import pytest
from django_celery_results.models import TaskResult

from apps.basket.services import basket_add_item, basket_checkout
from apps.ordering.models import Order
from tests.flows import CUSTOMER, SKU, FlowContract
from tests.integration.platform_bus import PlatformBus

pytestmark = pytest.mark.integration


class TestFlowsOnRabbitMQ(FlowContract):
    @pytest.fixture
    def bus(self, bus):
        # The integration suite's ``bus``: the workers and the relay, started once for the session.
        return PlatformBus(bus)

    # Not in the contract: the in-memory bus runs no Celery tasks, so it has no task results.
    def test_every_step_of_a_checkout_is_a_task_result_flower_and_the_admin_show(self, bus, mugs):
        basket_add_item(customer_id=CUSTOMER, sku=SKU, quantity=2, unit_price=mugs.price)
        order_id = basket_checkout(customer_id=CUSTOMER)

        bus.settle()

        assert Order.objects.get(id=order_id).status == Order.Status.PAID
        steps = set(TaskResult.objects.filter(status="SUCCESS").values_list("task_name", flat=True))
        assert {"ordering.PlaceOrder", "catalog.ReserveStock", "payment.ProcessPayment"} <= steps
