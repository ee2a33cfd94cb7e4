"""One business conversation as a timeline: every command and event sharing a correlation id.

``conversation_of`` reads what the bus records anyway (outbox rows, inbox rows,
dead letters and their repairs, Celery task results), one query per table
whatever the number of messages, and returns plain data: for each message,
who sent it and what caused it, when it was written and published, and for
each context that receives it whether that context handled it, gave up on it
or has yet to (consistency between contexts is eventual: what has not
happened yet is shown as pending, never left out). A message whose outbox row
was purged after its retention is rebuilt from its inbox rows and dead letters.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid
from collections import defaultdict

from celery import states
from django.db.models import Q
from django.db.models.fields.json import KT
from django.utils import timezone
from django_celery_results.models import TaskResult

from messaging.contexts import OPERATOR_SOURCE, context_of_module
from messaging.dead_letters import as_uuid
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.registry import registry
from messaging.task_message import delivery_id


class DeliveryState(enum.StrEnum):
    """Where one message stands in one receiving context."""

    HANDLED = "handled"
    #: Not handled yet and nothing went wrong: on its way, or waiting in the context's queue.
    PENDING = "pending"
    #: Between two attempts: retried automatically, or sent back by a person.
    RETRYING = "retrying"
    DEAD_LETTERED = "dead-lettered"
    DISCARDED = "discarded"


class StepState(enum.StrEnum):
    """Where one message stands as a whole."""

    #: Its time (``deliver_at``) has not come: the relay publishes it then.
    SCHEDULED = "scheduled"
    #: Written, not published yet.
    WAITING_FOR_RELAY = "waiting for the relay"
    #: Published; some receiving context has not handled it yet.
    IN_FLIGHT = "in flight"
    #: A receiving context gave up on it: a dead letter is open.
    FAILED = "failed"
    #: Handled (or discarded) by every context it reaches.
    DONE = "done"


#: A row due this long after it was written was scheduled (``deliver_at``); less is the
#: difference between the database's clock, which dates an unscheduled row's
#: ``available_at``, and the writer's, which dates its ``created_at``.
SCHEDULED_MARGIN = datetime.timedelta(seconds=1)
#: Step states a person waits on: the conversation is not over while a step is in one.
UNFINISHED = (StepState.SCHEDULED, StepState.WAITING_FOR_RELAY, StepState.IN_FLIGHT)


@dataclasses.dataclass(frozen=True)
class Handling:
    """One handler (consumer) of a receiving context, and when it handled the message, if it did."""

    consumer: str
    handled_at: datetime.datetime | None


@dataclasses.dataclass(frozen=True)
class Repair:
    """A person's act on a dead letter: retried or discarded."""

    action: str
    actor: str
    at: datetime.datetime
    note: str


@dataclasses.dataclass(frozen=True)
class Failure:
    """A dead letter of the message in one context."""

    dead_letter_id: uuid.UUID
    consumer: str
    reason: str
    exception_type: str
    error: str
    attempts: int
    status: str
    created_at: datetime.datetime
    repairs: tuple[Repair, ...]


@dataclasses.dataclass(frozen=True)
class TaskRun:
    """The Celery task result of one delivery (what Flower shows), when results are kept."""

    task_id: str
    #: The result row's primary key, for a link to it.
    result_id: int
    status: str
    worker: str
    done_at: datetime.datetime | None
    #: From start to end, when the worker recorded a start (``task_track_started``).
    runtime: datetime.timedelta | None


@dataclasses.dataclass(frozen=True)
class Redelivery:
    """An outbox row that sent a dead letter's message again, to this one context."""

    outbox_id: int
    written_at: datetime.datetime
    published_at: datetime.datetime | None


@dataclasses.dataclass
class Delivery:
    """The message in one receiving context: each of its handlers, failures, retries and task result."""

    context: str
    state: DeliveryState
    handlings: list[Handling]
    failures: list[Failure]
    redeliveries: list[Redelivery]
    task: TaskRun | None
    #: When the last of its handlers handled it, once all have.
    handled_at: datetime.datetime | None
    #: From publication (or writing, for a purged row) to ``handled_at``.
    latency: datetime.timedelta | None

    @property
    def automatic_retries(self) -> int:
        """Attempts after the first, counted over its dead letters (each records its attempts)."""
        return sum(max(failure.attempts - 1, 0) for failure in self.failures)


@dataclasses.dataclass
class Step:
    """One message of the conversation."""

    number: int
    message_id: uuid.UUID
    message_type: str
    kind: str
    #: The sending context, ``operator``, or empty when no record of the message says.
    source: str
    causation_id: uuid.UUID | None
    #: The number of the step that caused this one, when it is in this conversation.
    cause: int | None
    #: The outbox row, unless purged after its retention.
    outbox_id: int | None
    written_at: datetime.datetime | None
    #: Set when the message was scheduled for later than it was written.
    scheduled_for: datetime.datetime | None
    published_at: datetime.datetime | None
    deliveries: list[Delivery]
    state: StepState
    #: From the conversation's first message to this one's writing (or first trace).
    since_start: datetime.timedelta | None
    #: From its cause's writing to its own: the hop from one step to the next.
    since_cause: datetime.timedelta | None
    #: From the time it could be published to its publication.
    relay_delay: datetime.timedelta | None
    #: From its writing to the last receiving context handling it.
    took: datetime.timedelta | None

    @property
    def pending(self) -> bool:
        return self.state in UNFINISHED


@dataclasses.dataclass
class Conversation:
    correlation_id: uuid.UUID
    steps: list[Step]
    #: Who takes part, in order of appearance (the operator first): the diagram's lanes.
    participants: list[str]
    started_at: datetime.datetime | None
    #: The latest thing that happened: a write, a publication, a handling or a dead letter.
    last_activity_at: datetime.datetime | None

    @property
    def duration(self) -> datetime.timedelta | None:
        if self.started_at and self.last_activity_at:
            return self.last_activity_at - self.started_at
        return None

    @property
    def unfinished(self) -> list[Step]:
        return [step for step in self.steps if step.pending]

    @property
    def failed(self) -> list[Step]:
        return [step for step in self.steps if step.state == StepState.FAILED]


def conversation_of(correlation_id: uuid.UUID, *, with_task_results: bool = True) -> Conversation:
    """The timeline of every message with ``correlation_id`` (empty if there is none)."""
    records = _Records.load(correlation_id, with_task_results=with_task_results)
    now = timezone.now()
    steps = sorted((_step(key, records, now) for key in records.message_keys()),
                   key=lambda step: (_first_trace(step) or now, step.outbox_id or 0))
    by_id = {step.message_id: step for step in steps}
    started = min((t for step in steps if (t := _first_trace(step))), default=None)
    for number, step in enumerate(steps, start=1):
        step.number = number
        first, cause = _first_trace(step), by_id.get(step.causation_id)
        step.since_start = first - started if first and started else None
        cause_first = _first_trace(cause) if cause else None
        step.since_cause = first - cause_first if first and cause_first else None
    for step in steps:
        step.cause = by_id[step.causation_id].number if step.causation_id in by_id else None
    return Conversation(
        correlation_id=correlation_id,
        steps=steps,
        participants=_participants(steps),
        started_at=started,
        last_activity_at=max(records.activity_times(), default=None),
    )


def correlation_id_of_message(message_id: uuid.UUID) -> uuid.UUID | None:
    """The conversation of the message with this id, if any record of it is left."""
    for model in (OutboxMessage, InboxMessage, DeadLetter):
        found = (model.objects.filter(message_id=message_id, correlation_id__isnull=False)
                 .values_list("correlation_id", flat=True).first())
        if found:
            return found
    return None


@dataclasses.dataclass
class _Records:
    """The rows of one conversation, each table read once, grouped by message."""

    outbox: dict[uuid.UUID, list[OutboxMessage]]
    inbox: dict[uuid.UUID, list[InboxMessage]]
    dead_letters: dict[uuid.UUID, list[DeadLetter]]
    task_results: dict[str, TaskResult]

    @classmethod
    def load(cls, correlation_id: uuid.UUID, *, with_task_results: bool) -> _Records:
        outbox_rows = list(
            OutboxMessage.objects.filter(correlation_id=correlation_id)
            .defer("envelope", "last_error").order_by("id")
        )
        outbox = _grouped(outbox_rows, lambda row: row.message_id)
        # Inbox rows written before they carried a conversation are found by message id.
        inbox = _grouped(
            InboxMessage.objects.filter(Q(correlation_id=correlation_id) | Q(message_id__in=list(outbox)))
            .order_by("handled_at"),
            lambda row: row.message_id,
        )
        dead_letters = _grouped(
            DeadLetter.objects.filter(correlation_id=correlation_id)
            .defer("body", "headers", "traceback")
            # What the envelope says, for a message whose outbox row is gone.
            .annotate(envelope_source=KT("body__source"), envelope_causation=KT("body__causationid"),
                      envelope_time=KT("body__time"), envelope_kind=KT("body__kind"))
            .prefetch_related("actions")
            .order_by("created_at"),
            lambda letter: letter.message_id or letter.id,
        )
        records = cls(outbox, inbox, dead_letters, task_results={})
        if with_task_results:
            # A delivery's task id is derived from the message and the context (one per subscriber).
            task_ids = [delivery_id(key, context) for key in records.message_keys()
                        for context in records.receivers(key)]
            records.task_results = {
                result.task_id: result
                for result in TaskResult.objects.filter(task_id__in=task_ids).only(
                    "id", "task_id", "status", "worker", "date_started", "date_done")
            }
        return records

    def message_keys(self) -> list[uuid.UUID]:
        return list(dict.fromkeys([*self.outbox, *self.inbox, *self.dead_letters]))

    def original(self, key: uuid.UUID) -> OutboxMessage | None:
        """The outbox row that first sent the message (not a dead letter's retry)."""
        return next((row for row in self.outbox.get(key, []) if not row.redeliver_to), None)

    def message_type(self, key: uuid.UUID) -> str:
        for row in [*self.outbox.get(key, []), *self.inbox.get(key, []), *self.dead_letters.get(key, [])]:
            if row.message_type:
                return row.message_type
        return ""

    def receivers(self, key: uuid.UUID) -> dict[str, list[str]]:
        """Each context the message reaches, with its handlers: as the registry routes it, and
        any other context that recorded it (a handler since renamed, an unknown type)."""
        found: dict[str, list[str]] = defaultdict(list)
        for handler in registry.handlers_for(self.message_type(key)):
            found[handler.context].append(handler.name)
        for row in self.inbox.get(key, []):
            found[_context_of_consumer(row.consumer)].append(row.consumer)
        for letter in self.dead_letters.get(key, []):
            found[letter.context].extend([letter.consumer] if letter.consumer else [])
        return {context: list(dict.fromkeys(consumers)) for context, consumers in found.items()}

    def activity_times(self) -> list[datetime.datetime]:
        times = []
        for rows in self.outbox.values():
            times += [t for row in rows for t in (row.created_at, row.published_at) if t]
        times += [row.handled_at for rows in self.inbox.values() for row in rows]
        for letters in self.dead_letters.values():
            times += [letter.created_at for letter in letters]
            times += [action.at for letter in letters for action in letter.actions.all()]
        return times


def _step(key: uuid.UUID, records: _Records, now: datetime.datetime) -> Step:
    row = records.original(key)
    letters = records.dead_letters.get(key, [])
    letter = letters[0] if letters else None
    message_type = records.message_type(key)
    if row is not None:
        source, causation_id, kind = row.source, row.causation_id, row.kind
        written_at, published_at = row.created_at, row.published_at
        scheduled_for = row.available_at if row.available_at - row.created_at > SCHEDULED_MARGIN else None
    else:  # purged: what its dead letters' envelopes say
        source = (letter.envelope_source or "") if letter else ""
        causation_id = as_uuid(letter.envelope_causation) if letter else None
        kind = (letter.envelope_kind if letter else None) or _kind_of(message_type)
        written_at = _time_or_none(letter.envelope_time) if letter else None
        published_at = scheduled_for = None
    deliveries = [
        _delivery(context, consumers, key=key, records=records, published_at=published_at or written_at)
        for context, consumers in records.receivers(key).items()
    ]
    handled = [d.handled_at for d in deliveries if d.handled_at]
    state = _step_state(row, deliveries, now)
    return Step(
        number=0, message_id=key, message_type=message_type, kind=kind, source=source,
        causation_id=causation_id, cause=None, outbox_id=row.id if row else None,
        written_at=written_at, scheduled_for=scheduled_for, published_at=published_at,
        deliveries=deliveries, state=state, since_start=None, since_cause=None,
        relay_delay=published_at - max(written_at, scheduled_for or written_at) if row and published_at else None,
        took=max(handled) - written_at if written_at and handled and state == StepState.DONE else None,
    )


def _delivery(context: str, consumers: list[str], *, key: uuid.UUID, records: _Records,
              published_at: datetime.datetime | None) -> Delivery:
    handled_at = {row.consumer: row.handled_at for row in records.inbox.get(key, [])
                  if _context_of_consumer(row.consumer) == context}
    handlings = [Handling(consumer, handled_at.get(consumer)) for consumer in consumers]
    failures = [_failure(letter) for letter in records.dead_letters.get(key, []) if letter.context == context]
    redeliveries = [Redelivery(row.id, row.created_at, row.published_at)
                    for row in records.outbox.get(key, []) if row.redeliver_to == context]
    result = records.task_results.get(delivery_id(key, context))
    task = result and TaskRun(
        task_id=result.task_id, result_id=result.pk, status=result.status, worker=result.worker or "", done_at=result.date_done,
        runtime=result.date_done - result.date_started if result.date_done and result.date_started else None,
    )
    all_handled = bool(handlings) and all(h.handled_at for h in handlings)
    last_handled = max(h.handled_at for h in handlings) if all_handled else None
    return Delivery(
        context=context,
        state=_delivery_state(all_handled, failures, redeliveries, task),
        handlings=handlings, failures=failures, redeliveries=redeliveries, task=task,
        handled_at=last_handled,
        latency=last_handled - published_at if last_handled and published_at else None,
    )


def _delivery_state(all_handled: bool, failures: list[Failure], redeliveries: list[Redelivery],
                    task: TaskRun | None) -> DeliveryState:
    if all_handled:
        return DeliveryState.HANDLED
    latest = failures[-1] if failures else None
    if latest and latest.status == DeadLetter.Status.OPEN:
        return DeliveryState.DEAD_LETTERED
    if latest and latest.status == DeadLetter.Status.DISCARDED:
        return DeliveryState.DISCARDED
    if latest or (task and task.status == states.RETRY):
        return DeliveryState.RETRYING  # a person sent it back, or Celery will try again
    return DeliveryState.PENDING


def _step_state(row: OutboxMessage | None, deliveries: list[Delivery], now: datetime.datetime) -> StepState:
    states = {delivery.state for delivery in deliveries}
    if DeliveryState.DEAD_LETTERED in states:
        return StepState.FAILED
    if row is not None and row.published_at is None:
        return StepState.SCHEDULED if row.available_at and row.available_at > now else StepState.WAITING_FOR_RELAY
    if states & {DeliveryState.PENDING, DeliveryState.RETRYING}:
        return StepState.IN_FLIGHT
    return StepState.DONE


def _failure(letter: DeadLetter) -> Failure:
    return Failure(
        dead_letter_id=letter.id, consumer=letter.consumer, reason=letter.get_reason_display(),
        exception_type=letter.exception_type, error=letter.error, attempts=letter.attempts,
        status=letter.status, created_at=letter.created_at,
        repairs=tuple(Repair(action.action, action.actor, action.at, action.note) for action in letter.actions.all()),
    )


def _participants(steps: list[Step]) -> list[str]:
    seen = []
    for step in steps:
        seen += [step.source or "", *(delivery.context for delivery in step.deliveries)]
        if any(delivery.redeliveries for delivery in step.deliveries):
            seen.append(OPERATOR_SOURCE)  # a person sent it again
    ordered = list(dict.fromkeys(seen))
    if OPERATOR_SOURCE in ordered:  # the outside world on the left, as in any sequence diagram
        ordered.remove(OPERATOR_SOURCE)
        ordered.insert(0, OPERATOR_SOURCE)
    return ordered


def _first_trace(step: Step) -> datetime.datetime | None:
    """When the step was written, or else first seen handled or failing."""
    if step.written_at:
        return step.written_at
    seen = [h.handled_at for d in step.deliveries for h in d.handlings if h.handled_at]
    seen += [f.created_at for d in step.deliveries for f in d.failures]
    return min(seen, default=None)


def _context_of_consumer(consumer: str) -> str:
    """The context of a consumer name ``<context>:<type or name>`` (``messaging.registry.Handler.name``),
    or of one stored before names were stable, ``<module>.<function>``."""
    if ":" in consumer:
        return consumer.split(":", 1)[0]
    module = consumer.rsplit(".", 1)[0]
    return context_of_module(module) or module


def _kind_of(message_type: str) -> str:
    contract = registry.contract_for(message_type)
    return contract.kind if contract else ""


def _grouped(rows, key) -> dict:
    grouped = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return dict(grouped)


def _time_or_none(value) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None
