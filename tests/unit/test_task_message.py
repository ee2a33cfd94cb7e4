"""The intake check: every delivery gets an answer, the bus's own messages pass, strangers' do not."""

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.message import Message

from messaging.brokers.base import publish_envelope
from messaging.task_message import problem_with
from messaging.worker import intake_policy
from messaging.topology import Topology
from tests.brokers import on_broker
from tests.intake_strategies import deliveries, header_values, task_headers

ACCEPT = {"application/json"}


def _problem(message: Message) -> str | None:
    """The answer of an ordering worker on the broker the test is on."""
    return problem_with(message, intake_policy("ordering"))


def _delivery(*, body: bytes, headers, content_type="application/json", content_encoding="utf-8",
              properties=None) -> Message:
    return Message(body=body, headers=headers, content_type=content_type, content_encoding=content_encoding,
                   accept=ACCEPT, delivery_info={}, properties=properties or {})


class _RecordingProducer:
    def publish(self, body, **kwargs):
        self.body, self.kwargs = body, kwargs


def _as_the_bus_sends_it(*, broker: str, settings_, retried: bool) -> Message:
    """A message as the bus publishes it on ``broker``: first sent, or a retry as that broker waits it out."""
    on_broker(settings_, broker)
    envelope = {"id": str(uuid.uuid4()), "type": "ordering.PlaceOrder", "correlationid": str(uuid.uuid4()), "data": {}}
    retry = Topology().retry_route("ordering.commands", 2)
    producer = _RecordingProducer()
    publish_envelope(producer, envelope, exchange="commands", routing_key="ordering.PlaceOrder",
                     **({"retries": 3, "expiration": retry.expiration, "countdown": retry.countdown} if retried else {}))
    return _delivery(body=json.dumps(producer.body).encode(), headers=producer.kwargs["headers"])


@pytest.mark.parametrize("broker", ["rabbitmq", "redis", "embedded"])
@pytest.mark.parametrize("retried", [False, True])
def test_the_bus_accepts_the_messages_it_sends(settings, broker, retried):
    assert _problem(_as_the_bus_sends_it(broker=broker, settings_=settings, retried=retried)) is None


@given(delivery=deliveries())
@settings(max_examples=300, deadline=None)
def test_any_delivery_gets_an_answer_and_never_an_exception(delivery):
    headers, content_type, content_encoding, body, properties = delivery

    answer = _problem(_delivery(body=body, headers=headers, content_type=content_type,
                                    content_encoding=content_encoding, properties=properties))

    assert answer is None or isinstance(answer, str)


@given(name=st.sampled_from(["id", "task", "retries", "timelimit", "eta", "expires", "root_id", "stamps"]),
       value=header_values)
@settings(max_examples=300, deadline=None)
def test_a_header_of_the_wrong_shape_is_refused(name, value):
    headers = {**task_headers(), name: value}
    valid = {
        "id": isinstance(value, str) and _is_uuid(value),
        "task": isinstance(value, str) and 0 < len(value) <= 200 and _utf8(value),
        "retries": type(value) is int and 0 <= value <= 1000,
        "timelimit": value is None or value == [None, None],
        "eta": value is None,  # a random string is never an ISO date within the retry window here
        "expires": value is None,
        "root_id": value is None or (isinstance(value, str) and len(value) <= 500 and _utf8(value)),
        "stamps": value is None,
    }[name]
    if name == "eta" and isinstance(value, str):
        valid = None  # may or may not parse: only the absence of an exception is promised
    body = json.dumps([[], {"envelope": {}}, {}]).encode()
    if name == "task" and valid:
        valid = value == "ordering.PlaceOrder" or None  # other names: refused unless ordering handles them

    answer = _problem(_delivery(body=body, headers=headers))

    if valid is not None:
        assert (answer is None) == valid, (name, value, answer)


@pytest.mark.parametrize(("headers", "body", "why"), [
    ({"task": "ordering.PlaceOrder"}, [[], {}, {}], "id"),
    ({**task_headers(), "timelimit": 30}, [[], {}, {}], "timelimit"),
    ({**task_headers(), "task": ["ordering.PlaceOrder"]}, [[], {}, {}], "task"),
    ({**task_headers(), "expires": "2000-01-01T00:00:00+00:00"}, [[], {}, {}], "expires"),
    ({**task_headers(), "eta": "2999-01-01T00:00:00+00:00"}, [[], {}, {}], "eta"),
    (task_headers(), {"task": "ordering.PlaceOrder", "kwargs": {}}, "[args, kwargs, embed]"),
    (task_headers(), [[], {}, {"callbacks": [{"task": "other"}]}], "callbacks"),
    ({**task_headers(), "chain": [{"task": "celery.map"}]}, [[], {"envelope": {}}, {}], "chain"),
    ({**task_headers(), "task": "celery.map"}, [[], {"envelope": {}}, {}], "no task named 'celery.map'"),
    ({**task_headers(), "task": "catalog.ReserveStock"}, [[], {"envelope": {}}, {}], "no task named"),
    ({**task_headers(), "timelimit": [0.001, 0.001]}, [[], {"envelope": {}}, {}], "timelimit"),
    (task_headers(), [[], {"envelope": {}, "task": "x"}, {}], "arguments"),
    (task_headers(), [["x"], {"envelope": {}}, {}], "arguments"),
    ({"id": str(uuid.uuid4())}, {"task": "ordering.PlaceOrder", "kwargs": {}}, "protocol-2"),
])
def test_shapes_that_stopped_or_fooled_the_worker_are_refused_with_the_reason(headers, body, why):
    answer = _problem(_delivery(body=json.dumps(body).encode(), headers=headers))

    assert answer is not None and why in answer


def test_a_pickle_is_refused_before_anything_reads_it():
    answer = _problem(_delivery(body=b"\x80\x04K\x01.", headers=task_headers(),
                                    content_type="application/x-python-serialize", content_encoding="binary"))

    assert answer is not None and "cannot decode" in answer


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def test_a_compressed_body_is_never_decompressed():
    import bz2

    import config.celery_app  # noqa: F401 - where the decoders are replaced, in every process

    bomb = bz2.compress(b"[" * 10_000_000)  # about 50 bytes that would become 10 MB

    message = Message(body=bomb, headers={**task_headers(), "compression": "application/x-bz2"},
                      content_type="application/json", content_encoding="utf-8", accept=ACCEPT)

    assert message.errors, "kombu reports a decode error, which the worker dead-letters"
    assert message.body == bomb
    assert "compression" in _problem(message)
