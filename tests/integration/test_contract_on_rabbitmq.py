"""The broker contract (``broker_contract.BrokerContract``) on RabbitMQ: the
session's broker, whose processes the other integration tests share."""

import pytest
from django.conf import settings

from tests.integration.broker_contract import BrokerContract

pytestmark = pytest.mark.integration


class TestContractOnRabbitMQ(BrokerContract):
    @pytest.fixture(scope="class")
    def broker_url(self) -> str:
        return settings.CELERY_BROKER_URL
