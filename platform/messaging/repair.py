"""Repairing dead letters: retry one back to the consumer that failed, or discard it,
and reopen one that was discarded by mistake.

Each is a person's act, recorded as a ``DeadLetterAction`` (who, when, why), in
the transaction that changes the dead letter's status; a row is locked while it
is acted on, so two operators never retry one message twice. Retry and discard
take open dead letters; a retry is final (what happens next is a new dead letter,
or the message handled). A discard can be undone: ``reopen`` makes a discarded
dead letter open again, with a note saying why, and it can then be retried or
discarded like any other.

A retry writes the message again, with its original envelope and id, to the
outbox (``outbox.redeliver``): the relay publishes it, confirmed like any
message, to the failing context's queue only, never to an event's fanout
exchange (the other subscribers handled it already). That context's inbox
absorbs what it had handled before: of two handlers, the one that succeeded
does not run again. The retry starts with a full retry budget.

What can be retried: a dead letter whose body is a whole envelope (readable,
not truncated), whose context still handles its type, and which is younger
than ``BUS_DEAD_LETTER_REPLAY_WINDOW``: after that the inbox may have forgotten
what was handled (its retention is held above the window by check E010), and
a retry could apply a message twice.

What happened after a retry is read from what the consumer writes anyway
(``retry_outcome``): the inbox rows of the message, or a new dead letter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Min, QuerySet
from django.utils import timezone
from pydantic import ValidationError

from messaging import outbox
from messaging.contracts import Envelope
from messaging.models import DeadLetter, DeadLetterAction, InboxMessage, OutboxMessage
from messaging.registry import registry

#: The fields a failure group is made of: the same error in the same consumer.
GROUP_FIELDS = ("reason", "exception_type", "context", "consumer")


@dataclasses.dataclass
class RepairReport:
    """What an act did: the dead letters acted on, and those refused with why."""

    done: list[DeadLetter] = dataclasses.field(default_factory=list)
    refused: list[tuple[DeadLetter, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class RetryOutcome:
    """Where a retry stands: ``waiting`` (for the relay), ``delivered`` (on the broker,
    not handled yet), ``handled``, or ``dead_again`` (then ``dead_letter`` is the new one)."""

    state: str
    detail: str
    dead_letter: DeadLetter | None = None


def retry(dead_letters: Iterable[DeadLetter], *, actor: str, user=None, dry_run: bool = False) -> RepairReport:
    """Send each open, retryable dead letter back to the consumer that failed, through the outbox.

    Dead letters of one message in one context (it failed more than once) go
    back as one message, and are all marked retried.
    """
    report = RepairReport()
    with transaction.atomic():
        sent = {}  # (message id, context) -> the outbox row that redelivers it
        for dead_letter in _locked(dead_letters):
            why = why_not_retryable(dead_letter)
            if why:
                report.refused.append((dead_letter, why))
                continue
            report.done.append(dead_letter)
            if dry_run:
                continue
            key = (dead_letter.message_id, dead_letter.context)
            if key not in sent:
                envelope = Envelope.model_validate(dead_letter.body)
                sent[key] = outbox.redeliver(envelope, context=dead_letter.context)
            _record(dead_letter, DeadLetter.Status.RETRIED, DeadLetterAction.Action.RETRIED,
                    actor=actor, user=user, outbox_message=sent[key])
    return report


def discard(
    dead_letters: Iterable[DeadLetter], *, actor: str, note: str, user=None, dry_run: bool = False
) -> RepairReport:
    """Archive each open dead letter with the reason it needs no repair; nothing is sent."""
    if not note.strip():
        raise ValueError("a discard needs a note saying why")
    return _act_on_each(dead_letters, _why_not_open, DeadLetter.Status.DISCARDED, DeadLetterAction.Action.DISCARDED,
                        dry_run=dry_run, actor=actor, user=user, note=note.strip())


def reopen(
    dead_letters: Iterable[DeadLetter], *, actor: str, note: str, user=None, dry_run: bool = False
) -> RepairReport:
    """Make each discarded dead letter open again, with why (a discard made by mistake, or a
    message needed after all); nothing is sent until it is retried."""
    if not note.strip():
        raise ValueError("reopening needs a note saying why")
    return _act_on_each(dead_letters, _why_not_discarded, DeadLetter.Status.OPEN, DeadLetterAction.Action.REOPENED,
                        dry_run=dry_run, actor=actor, user=user, note=note.strip())


def why_not_retryable(dead_letter: DeadLetter) -> str | None:
    """Why this dead letter cannot be retried, or None if it can."""
    if why := _why_not_open(dead_letter):
        return why
    if dead_letter.body_truncated:
        return "only the start of its body was kept (BUS_DEAD_LETTER_BODY_LIMIT): it cannot be sent again"
    try:
        envelope = Envelope.model_validate(dead_letter.body)
    except ValidationError:
        return "its body is not a readable envelope: there is nothing to send again"
    if not registry.handlers_for(envelope.type, dead_letter.context):
        return f"context '{dead_letter.context}' no longer handles {envelope.type}"
    window = settings.BUS_DEAD_LETTER_REPLAY_WINDOW
    if dead_letter.created_at < timezone.now() - window:
        return (f"dead-lettered more than {window} ago (BUS_DEAD_LETTER_REPLAY_WINDOW): the inbox may have "
                "forgotten what it handled; publish its data as a new message instead")
    return None


def retry_outcome(action: DeadLetterAction) -> RetryOutcome:
    """What became of a retry, from the tables the relay and the consumer write."""
    dead_letter = action.dead_letter
    again = (
        DeadLetter.objects.filter(
            message_id=dead_letter.message_id, context=dead_letter.context, created_at__gt=action.at
        ).order_by("created_at").first()
    )
    if again is not None:
        return RetryOutcome("dead_again", f"dead again: {again.get_reason_display()}", again)
    consumers = {handler.name for handler in registry.handlers_for(dead_letter.message_type, dead_letter.context)}
    handled = set(
        InboxMessage.objects.filter(message_id=dead_letter.message_id, consumer__in=consumers)
        .values_list("consumer", flat=True)
    )
    if consumers and handled == consumers:
        return RetryOutcome("handled", f"handled by {', '.join(sorted(handled))}")
    row = OutboxMessage.objects.filter(pk=action.outbox_message_id).first()  # purged once published long ago
    if row is not None and row.published_at is None:
        problem = f" (last error: {row.last_error})" if row.last_error else ""
        return RetryOutcome("waiting", f"in the outbox, waiting for the relay{problem}")
    return RetryOutcome("delivered", f"on its way to {dead_letter.context}: not handled yet")


def failure_groups(dead_letters: QuerySet | None = None) -> QuerySet:
    """Open dead letters grouped by error and consumer, largest group first, with first and last seen."""
    rows = DeadLetter.objects.all() if dead_letters is None else dead_letters
    return (
        rows.filter(status=DeadLetter.Status.OPEN)
        .values(*GROUP_FIELDS)
        .annotate(count=Count("id"), first_seen=Min("created_at"), last_seen=Max("created_at"))
        .order_by("-count", "-last_seen")
    )


def group_members(group: dict) -> QuerySet:
    """The open dead letters of one group (a row of ``failure_groups``)."""
    return DeadLetter.objects.filter(status=DeadLetter.Status.OPEN, **{field: group[field] for field in GROUP_FIELDS})


def _why_not_open(dead_letter: DeadLetter) -> str | None:
    if dead_letter.status == DeadLetter.Status.OPEN:
        return None
    why = f"it is {dead_letter.get_status_display().lower()} already"
    if dead_letter.status == DeadLetter.Status.DISCARDED:
        why += ": reopen it first if it needs repair after all"
    return why


def _why_not_discarded(dead_letter: DeadLetter) -> str | None:
    if dead_letter.status == DeadLetter.Status.DISCARDED:
        return None
    return f"it is {dead_letter.get_status_display().lower()}: only a discarded dead letter is reopened"


def _act_on_each(dead_letters: Iterable[DeadLetter], why_not, status: str, action: str, *, dry_run: bool,
                 **fields) -> RepairReport:
    """Give each dead letter ``status``, recording ``action``, unless ``why_not`` says why not."""
    report = RepairReport()
    with transaction.atomic():
        for dead_letter in _locked(dead_letters):
            if why := why_not(dead_letter):
                report.refused.append((dead_letter, why))
                continue
            report.done.append(dead_letter)
            if not dry_run:
                _record(dead_letter, status, action, **fields)
    return report


def _locked(dead_letters: Iterable[DeadLetter]) -> QuerySet:
    # Read again under a row lock: a status another operator just changed is seen here.
    ids = dead_letters.values("pk") if isinstance(dead_letters, QuerySet) else [row.pk for row in dead_letters]
    return DeadLetter.objects.select_for_update().filter(pk__in=ids).order_by("created_at", "pk")


def _record(dead_letter: DeadLetter, status: str, action: str, **fields) -> None:
    dead_letter.status = status
    dead_letter.save(update_fields=["status"])
    DeadLetterAction.objects.create(dead_letter=dead_letter, action=action, **fields)
