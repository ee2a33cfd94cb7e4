"""What a dead letter keeps: its body whole up to BUS_DEAD_LETTER_BODY_LIMIT bytes of
JSON; beyond that the start of the JSON, a flag and the size it arrived with."""

import json
import uuid

import pytest
from kombu import Message

from messaging.delivery import consume
from messaging.dead_letters import RAW_BODY_LIMIT, dead_letter_raw_message
from messaging.models import DeadLetter

pytestmark = pytest.mark.django_db

FIVE_MEGABYTES = 5 * 1024 * 1024


def test_a_five_megabyte_body_is_kept_as_a_preview_with_its_size(settings):
    body = {"id": str(uuid.uuid4()), "type": "catalog.Nope", "padding": "x" * FIVE_MEGABYTES}

    consume(body, context="basket")

    letter = DeadLetter.objects.get()
    as_json = json.dumps(body)
    assert letter.reason == DeadLetter.Reason.INVALID_ENVELOPE
    assert letter.body_truncated
    assert letter.body_size == len(as_json)
    assert letter.body == as_json[: settings.BUS_DEAD_LETTER_BODY_LIMIT]


def test_a_body_within_the_limit_is_kept_whole_with_its_size(settings):
    body = {"id": str(uuid.uuid4()), "type": "catalog.Nope"}
    settings.BUS_DEAD_LETTER_BODY_LIMIT = len(json.dumps(body))

    consume(body, context="basket")

    letter = DeadLetter.objects.get()
    assert (letter.body, letter.body_size, letter.body_truncated) == (body, len(json.dumps(body)), False)


def test_a_json_task_message_from_the_broker_keeps_the_size_it_arrived_with(settings):
    settings.BUS_DEAD_LETTER_BODY_LIMIT = 1000
    envelope = {"id": str(uuid.uuid4()), "type": "catalog.Nope", "data": {"blob": "y" * 5000}}
    raw = json.dumps([[], {"envelope": envelope}, {"callbacks": None}]).encode()

    letter = dead_letter_raw_message(
        Message(body=raw, content_type="application/json", headers={"id": envelope["id"], "task": "catalog.Nope"}),
        reason=DeadLetter.Reason.UNREADABLE, context="catalog", error="unknown task",
    )

    assert letter.body_truncated
    assert letter.body == json.dumps(envelope)[:1000]
    assert letter.body_size == len(raw)


def test_an_unreadable_five_megabyte_body_keeps_its_start_as_base64_and_its_full_size():
    raw = b"\x80\x04" + b"p" * FIVE_MEGABYTES  # a pickle's opening bytes: never unpickled

    letter = dead_letter_raw_message(
        Message(body=raw, content_type="application/x-python-serialize", headers={"task": "catalog.Nope"}),
        reason=DeadLetter.Reason.UNREADABLE, context="catalog", error="content type refused",
    )

    assert letter.body_size == len(raw)
    assert len(letter.body["base64"]) <= RAW_BODY_LIMIT * 4 / 3 + 4
