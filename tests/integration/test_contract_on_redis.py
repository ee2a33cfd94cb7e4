"""The broker contract (``broker_contract.BrokerContract``) on Redis: a private
redis-server of the session's (``redis_server``), with the bus's transport."""

import pytest

from tests.integration import redis
from tests.integration.broker_contract import BrokerContract

pytestmark = pytest.mark.integration


class TestContractOnRedis(BrokerContract):
    @pytest.fixture(scope="class")
    def broker_url(self, redis_server) -> str:
        return redis_server.url

    @pytest.fixture(scope="class")
    def platform_env(self) -> dict[str, str]:
        return redis.PLATFORM_ENV
