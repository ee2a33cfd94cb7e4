"""The adapter is chosen by the broker URL, and says what its broker cannot work with."""

import re

import pytest
from django.core.exceptions import ImproperlyConfigured

from messaging import brokers
from messaging.checks import check_broker
from tests.brokers import on_broker


@pytest.mark.parametrize(("url", "label"), [
    ("amqp://u:p@rabbit:5672/shop", "RabbitMQ"),
    ("redis://:p@cache:6379/0", "Redis"),
    ("filesystem://localhost/", "embedded filesystem broker"),
])
def test_the_broker_url_chooses_the_adapter(url, label):
    assert brokers.for_url(url).label == label


def test_a_broker_the_bus_cannot_run_on_is_refused_with_the_ones_it_can():
    with pytest.raises(ImproperlyConfigured, match=r"runs on amqp://.*redis://.*not sqs://"):
        brokers.for_url("sqs://queue.example.com")


def test_the_location_shown_to_people_has_no_password():
    assert brokers.for_url("redis://:secret@cache:6379/0").describe() == "cache:6379/0"


def test_on_redis_a_visibility_timeout_shorter_than_a_worker_holds_a_message_fails_the_check(settings):
    on_broker(settings, "redis")
    settings.CELERY_TASK_TIME_LIMIT, settings.BUS_RETRY_BACKOFF_MAX = 300, 500

    settings.BUS_REDIS_VISIBILITY_TIMEOUT = 799
    [error] = check_broker(None)
    assert error.id == "messaging.E011"
    assert "Set BUS_REDIS_VISIBILITY_TIMEOUT to 800 or more" in error.hint

    settings.BUS_REDIS_VISIBILITY_TIMEOUT = 800
    assert check_broker(None) == []


def test_on_rabbitmq_there_is_no_visibility_timeout_to_check(settings):
    on_broker(settings, "rabbitmq")
    settings.BUS_REDIS_VISIBILITY_TIMEOUT = 1

    assert check_broker(None) == []


FAILOVER_URL = "amqp://bus:p1%2F@rabbit-1:5672/bus;amqp://bus:p2@rabbit-2:5672/bus; amqp://bus:p3@rabbit-3:5672/bus"


def test_a_failover_url_is_described_by_every_node_without_any_password():
    from messaging.brokers.base import failover_addresses

    assert len(failover_addresses(FAILOVER_URL)) == 3
    assert brokers.for_url(FAILOVER_URL).describe() == "rabbit-1:5672/bus, rabbit-2:5672/bus, rabbit-3:5672/bus"


def test_a_failover_url_is_shown_with_every_nodes_password_masked():
    from messaging.brokers.base import masked_url

    shown = masked_url(FAILOVER_URL)

    assert not {"p1", "p2", "p3"} & set(re.findall(r"p\d", shown))
    assert shown.count("**") == 3 and shown.count(";") == 2
