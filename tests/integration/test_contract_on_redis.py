"""The broker contract (``broker_contract.BrokerContract``) on Redis: a private
redis-server of the session's (``redis_server``), with the bus's transport."""

import pytest

from tests.integration.broker_contract import BrokerContract

pytestmark = pytest.mark.integration


class TestContractOnRedis(BrokerContract):
    @pytest.fixture(scope="class")
    def broker_url(self, redis_server) -> str:
        return redis_server.url

    @pytest.fixture(scope="class")
    def platform_env(self) -> dict[str, str]:
        return {
            # A killed worker's message comes back after the visibility timeout: seconds
            # here, not the default quarter of an hour. It must outlast what a worker
            # holds (manage.py check): the time limit, and a retry's wait.
            "BUS_REDIS_VISIBILITY_TIMEOUT": "10",
            "CELERY_TASK_TIME_LIMIT": "4",
            "CELERY_TASK_SOFT_TIME_LIMIT": "3",
            "BUS_DATABASE_WAIT": "1",
        }
