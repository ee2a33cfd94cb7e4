"""Whatever a stranger puts on a context's queue, the worker keeps consuming and
nothing vanishes: each delivery is handled or becomes exactly one dead letter.

Random headers, properties and bodies (``tests.intake_strategies``) go straight
onto RabbitMQ, to the ordering worker's command queue, as a stranger would put
them there: not through the bus.
"""

import pytest
from celery import current_app
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kombu import Connection

from messaging.models import DeadLetter
from messaging.topology import DEFAULT_EXCHANGE, command_queue_name
from tests.intake_strategies import deliveries
from tests.integration.rabbitmq import rabbitmqctl
from tests.polling import wait_for

pytestmark = pytest.mark.integration

QUEUE = command_queue_name("ordering")
#: Long enough for a delivery the worker rejected to the broker's dead-letter
#: queue to be collected by the relay, which polls every 30 s in these tests.
SETTLE_TIMEOUT = 90


def _put_on_the_queue(batch) -> int:
    """Publish each delivery as it is (confirmed); return how many the broker took."""
    taken = 0
    connection = None
    for headers, content_type, content_encoding, body, properties in batch:
        if connection is None:
            connection = Connection(current_app.conf.broker_url, transport_options={"confirm_publish": True})
            producer = connection.Producer()
        try:
            producer.publish(body, exchange=DEFAULT_EXCHANGE, routing_key=QUEUE, headers=headers,
                             content_type=content_type, content_encoding=content_encoding, delivery_mode=2,
                             **properties)
        except (ValueError, TypeError, OverflowError, UnicodeError):
            continue  # a header py-amqp itself cannot encode never reaches the broker
        except connection.connection_errors + connection.channel_errors:
            # RabbitMQ closes the connection on some tables (541 INTERNAL_ERROR): not taken.
            connection.collect()
            connection = None
            continue
        taken += 1
    if connection is not None:
        connection.release()
    return taken


def _queue_is_empty() -> bool:
    return all(row["messages"] == 0 for row in rabbitmqctl("list_queues", "name", "messages")
               if row["name"] == QUEUE)


@pytest.mark.parametrize("worker", ["worker-ordering"])
def test_random_deliveries_never_stop_the_worker_and_each_becomes_one_dead_letter(bus, worker):
    process = bus[worker]

    @given(batch=st.lists(deliveries(), min_size=15, max_size=30))
    @settings(max_examples=8, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def deliveries_each_end_as_one_dead_letter(batch):
        before = DeadLetter.objects.count()

        sent = _put_on_the_queue(batch)

        wait_for(lambda: DeadLetter.objects.count() >= before + sent and _queue_is_empty(),
                 timeout=SETTLE_TIMEOUT, message=f"{sent} dead letters and an empty {QUEUE}")
        assert DeadLetter.objects.count() == before + sent
        assert process.poll() is None, f"the worker stopped:\n{process.log_path.read_text()[-3000:]}"

    deliveries_each_end_as_one_dead_letter()
    assert "Unrecoverable error" not in process.log_path.read_text()
