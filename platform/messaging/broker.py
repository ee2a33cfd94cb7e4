"""Putting envelopes on the broker, confirmed in batches.

Every message goes as the Celery task message ``messaging.task_message``
makes of its envelope; this module only publishes it and waits for the
broker. The task id on the wire is the message id; the worker runs each
delivery under a task id of its own (``task_message.delivery_id``).

``ConfirmedPublisher`` publishes a batch and then waits for the broker to
confirm it (RabbitMQ publisher confirms, acknowledged with ``multiple``), so
a batch costs one round trip instead of one per message; it reports which
messages were confirmed, refused or left unconfirmed, and a caller marks only
the confirmed ones.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from celery import current_app
from django.conf import settings
from kombu import Exchange

from messaging import task_message


class PublishRefusedError(Exception):
    """The broker refused (nacked) a message: it does not have it."""


class ConfirmTimeoutError(TimeoutError):
    """The broker did not confirm every message of a batch in time."""


def publish_envelope(
    producer,
    envelope: dict[str, Any],
    *,
    exchange: Exchange | str,
    routing_key: str,
    retries: int = 0,
    delay: float | None = None,
    mandatory: bool = False,
) -> None:
    """Put ``envelope`` on the broker (no waiting: see ``ConfirmedPublisher``).

    ``mandatory`` asks RabbitMQ to return the message if no queue is bound to
    its route; whoever sets it must handle the channel's ``basic_return``.

    ``delay`` holds a retry back: on RabbitMQ as the message's TTL in a retry
    queue (``exchange`` is then a retry exchange), on the embedded broker as a
    Celery countdown, which the worker waits out itself.
    Raises whatever the transport raises: the caller decides what a failure means.
    """
    embedded = settings.BUS_EMBEDDED_BROKER
    message = task_message.for_envelope(envelope, retries=retries, countdown=delay if embedded else None)
    producer.publish(
        message.body,
        exchange=exchange,
        routing_key=routing_key,
        headers=message.headers,
        serializer="json",
        delivery_mode=2,  # persistent
        retry=False,
        mandatory=mandatory,
        expiration=delay if delay and not embedded else None,
        **message.properties,
    )


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One message to publish: its envelope and where it goes."""

    envelope: dict[str, Any]
    exchange: Exchange | str
    routing_key: str
    retries: int = 0
    delay: float | None = None


def publish_confirmed(messages: list[Outgoing]) -> None:
    """Publish a few messages on a connection of their own; raise unless all are confirmed.

    For the occasional message (a retry); a steady stream goes through one
    long-lived ``ConfirmedPublisher``, as the relay's does.
    """
    with current_app.connection_for_write() as connection:
        ConfirmedPublisher(connection.default_channel, timeout=settings.BUS_CONFIRM_TIMEOUT).publish_all(messages)


@dataclasses.dataclass
class BatchOutcome:
    """What became of a batch, by position in it."""

    #: Positions the broker confirmed: safe to mark as published.
    confirmed: list[int] = dataclasses.field(default_factory=list)
    #: Positions the broker refused (nacked).
    refused: list[int] = dataclasses.field(default_factory=list)
    #: Positions the broker returned: no queue is bound to their route.
    unroutable: list[int] = dataclasses.field(default_factory=list)
    #: Why the rest is unconfirmed (connection lost, confirm timeout), if anything is.
    error: Exception | None = None

    def refusal(self, batch_size: int) -> PublishRefusedError | None:
        problems = []
        if self.refused:
            problems.append(f"refused {len(self.refused)} of {batch_size} messages")
        if self.unroutable:
            problems.append(f"returned {len(self.unroutable)} of {batch_size} messages as unroutable "
                            "(no queue bound to their route)")
        return PublishRefusedError(f"the broker {' and '.join(problems)}") if problems else None


class ConfirmedPublisher:
    """Publishes batches on one channel and waits for the broker's confirms.

    Every message is published ``mandatory``: one no queue is bound to comes
    back (``basic.return``, before its confirm) and is reported unroutable,
    never counted as delivered.

    The channel must be this publisher's alone: confirms are numbered per
    channel, so another publisher on it would shift the numbering. A transport
    without publisher confirms (the embedded filesystem broker) has the
    message once ``publish`` returns; every message counts as confirmed then.
    After an error the channel's numbering is unknown: drop its connection.
    """

    def __init__(self, channel, *, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout
        self.producer = current_app.amqp.Producer(channel, auto_declare=False)
        self.uses_confirms = callable(getattr(channel, "confirm_select", None))
        self._published = 0  # the broker numbers confirms 1, 2, ... per channel
        self._unsettled: set[int] = set()
        self._nacked: set[int] = set()
        self._returned: set[int] = set()
        self._tag_of_id: dict[str, int] = {}
        if self.uses_confirms:
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.events["basic_return"].add(self._on_return)

    def publish(self, messages: list[Outgoing]) -> BatchOutcome:
        """Publish ``messages`` in order, then wait until all are confirmed or refused."""
        outcome = BatchOutcome()
        tags = []
        try:
            for message in messages:
                publish_envelope(
                    self.producer, message.envelope, exchange=message.exchange,
                    routing_key=message.routing_key, retries=message.retries, delay=message.delay,
                    mandatory=self.uses_confirms,
                )
                self._published += 1
                tags.append(self._published)
                self._unsettled.add(self._published)
                self._tag_of_id[str(message.envelope["id"])] = self._published
            if self.uses_confirms:
                self._wait_for_confirms()
        except Exception as exc:
            outcome.error = exc
        for position, tag in enumerate(tags):
            if tag in self._nacked:
                outcome.refused.append(position)
            elif tag in self._returned:
                outcome.unroutable.append(position)
            elif tag not in self._unsettled or not self.uses_confirms:
                outcome.confirmed.append(position)
        self._unsettled.clear()
        self._nacked.clear()
        self._returned.clear()
        self._tag_of_id.clear()
        return outcome

    def publish_all(self, messages: list[Outgoing]) -> None:
        """Publish ``messages``; raise unless the broker confirmed every one."""
        outcome = self.publish(messages)
        if outcome.error is not None:
            raise outcome.error
        if refusal := outcome.refusal(len(messages)):
            raise refusal

    def _wait_for_confirms(self) -> None:
        deadline = time.monotonic() + self.timeout
        while self._unsettled:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfirmTimeoutError(
                    f"the broker left {len(self._unsettled)} messages of a batch unconfirmed "
                    f"after {self.timeout}s (BUS_CONFIRM_TIMEOUT)"
                )
            try:
                self.channel.connection.drain_events(timeout=remaining)
            except TimeoutError:
                pass  # the deadline check above turns it into a ConfirmTimeoutError

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        # Confirms may come in any order; ``multiple`` settles every tag up to this one.
        if multiple:
            self._unsettled = {tag for tag in self._unsettled if tag > delivery_tag}
        else:
            self._unsettled.discard(delivery_tag)

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        # A return carries no delivery tag: the task id header (the message id) names it.
        # RabbitMQ sends it before the message's confirm, so the batch is still open.
        headers = message.properties.get("application_headers") or {}
        tag = self._tag_of_id.get(str(headers.get("id")))
        if tag is not None:
            self._returned.add(tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked.update(tag for tag in self._unsettled if tag == delivery_tag or (multiple and tag < delivery_tag))
        self._on_ack(delivery_tag, multiple)
