"""The broker contract (``broker_contract.BrokerContract``) on the embedded
broker (kombu's filesystem transport, in a folder of the class's own), with
PostgreSQL. It is for trying the platform: what it cannot keep (its adapter's
flags, the README's broker table) is marked below, with the reason."""

import pytest
from django.test import override_settings

from tests.integration.broker_contract import BrokerContract

pytestmark = pytest.mark.integration


class TestContractOnEmbedded(BrokerContract):
    @pytest.fixture(scope="class")
    def broker_url(self, tmp_path_factory):
        folder = tmp_path_factory.mktemp("embedded")
        # The adapter finds its folders in BUS_DATA_DIR: the test's, the same as its processes'.
        # A host of its own (the transport ignores it) keeps it apart from any other adapter.
        with override_settings(BUS_DATA_DIR=folder):
            yield "filesystem://broker-contract/"

    @pytest.fixture(scope="class")
    def platform_env(self, broker_url) -> dict[str, str]:
        from django.conf import settings

        return {"BUS_DATA_DIR": str(settings.BUS_DATA_DIR)}

    @pytest.mark.xfail(strict=True, reason="no delivery limit: a message given back loops")
    def test_a_message_over_the_delivery_limit_is_dead_lettered_by_the_broker_and_collected(self, bus, broker):
        super().test_a_message_over_the_delivery_limit_is_dead_lettered_by_the_broker_and_collected(bus, broker)

    @pytest.mark.skip(reason="a message taken by a worker whose whole process is killed is gone "
                             "(the file moved out of its queue); the test would wait a minute for it")
    def test_a_worker_killed_after_commit_but_before_ack_redelivers_and_the_inbox_absorbs_it(self, bus, platform):
        raise AssertionError("skipped")

    # Why, reproduced with billiard alone: the filesystem transport has no event loop, so Celery
    # runs billiard's plain Pool, whose processes read jobs from one shared pipe under one
    # lock. An idle pool process waits for the next job holding that lock; SIGKILLed then (this
    # test kills every pool process, the idle one too), it never releases it, the new processes
    # wait for it forever, and the worker takes messages up to its prefetch and runs none
    # (killing only the busy process is fine). On RabbitMQ and Redis, Celery's AsynPool gives
    # each process a pipe of its own. Run, it wedges the class's one catalog worker: skipped.
    @pytest.mark.skip(reason="the embedded worker's pool (billiard's, without an event loop) deadlocks when an "
                             "idle pool process is SIGKILLed while it holds the shared job-pipe lock; the "
                             "wedged worker would stall the class's later tests")
    def test_a_handler_killed_before_commit_is_redelivered_and_applied_once(self, bus, platform):
        raise AssertionError("skipped")
