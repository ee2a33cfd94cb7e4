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


SENTINEL_URL = "sentinel://:s1%2F@sentinel-1:26379/0;sentinel://:s2@sentinel-2:26379/0;sentinel://:s3@sentinel-3/0"


def test_a_sentinel_url_is_redis_through_sentinel_described_by_its_primary_and_every_sentinel(settings):
    settings.BUS_REDIS_SENTINEL_MASTER = "bus"
    broker = brokers.for_url(SENTINEL_URL)

    assert broker.label == "Redis" and broker.transport == "messaging.brokers.sentinel:Transport"
    assert broker.describe() == "primary 'bus' of the sentinels sentinel-1:26379/0, sentinel-2:26379/0, sentinel-3/0"
    assert broker.transport_options()["master_name"] == "bus"


def test_a_sentinel_url_is_shown_with_every_sentinels_password_masked():
    from messaging.brokers.base import masked_url

    shown = masked_url(SENTINEL_URL)

    assert not {"s1", "s2", "s3"} & set(re.findall(r"s\d", shown))
    assert shown.count(":**@") == 3 and shown.count("sentinel://") == 3


def test_through_sentinel_a_publish_counts_once_a_replica_has_it_unless_told_otherwise(settings):
    settings.BUS_REDIS_SENTINEL_MASTER = "bus"
    assert brokers.for_url(SENTINEL_URL).transport_options()["replicas_to_confirm"] == 1

    settings.BUS_REDIS_REPLICAS_TO_CONFIRM = 0
    assert brokers.for_url(SENTINEL_URL).transport_options()["replicas_to_confirm"] == 0


def test_a_sentinel_url_without_the_primarys_name_fails_the_check(settings):
    settings.CELERY_BROKER_URL = SENTINEL_URL
    settings.BUS_REDIS_SENTINEL_MASTER = ""

    [error] = check_broker(None)

    assert error.id == "messaging.E013" and "BUS_REDIS_SENTINEL_MASTER" in error.hint
    settings.BUS_REDIS_SENTINEL_MASTER = "bus"
    assert check_broker(None) == []
