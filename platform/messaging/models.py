"""The bus's own tables: outbox, inbox and dead letters."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class OutboxQuerySet(models.QuerySet):
    def due(self, at=None):
        """Unpublished rows whose time has come: by the database's clock, or at ``at``."""
        return self.filter(published_at__isnull=True, available_at__lte=Now() if at is None else at)


class OutboxMessage(models.Model):
    """A message saved in the sender's transaction, published later by the relay.

    A row is marked published only after the broker confirmed it, so a crash
    anywhere in between sends it again (at least once), never zero times.
    A scheduled message is an ordinary row that is not published before its time.
    """

    #: Publication order, after ``available_at``: ties go out by ascending id.
    id = models.BigAutoField(primary_key=True)
    #: Unique among ordinary rows; a dead letter's retry carries its message's id again.
    message_id = models.UUIDField(db_index=True, editable=False)
    kind = models.CharField(max_length=16)
    message_type = models.CharField(max_length=200, db_index=True)
    correlation_id = models.UUIDField(db_index=True)
    #: The envelope's ``causationid`` and ``source``, copied into columns to filter on
    #: (the conversation view follows causes; the admin lists who sent what).
    causation_id = models.UUIDField(null=True, blank=True, db_index=True)
    source = models.CharField(max_length=100, blank=True, default="", db_index=True)
    #: Searched as text on PostgreSQL through a trigram index (``console.conversation_search``).
    envelope = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    #: Not published before this time: the write (the database's clock), or a scheduled message's ``deliver_at``.
    available_at = models.DateTimeField(db_default=Now())
    published_at = models.DateTimeField(null=True, blank=True)
    #: Failed publish attempts and the last error, for the admin.
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    #: A dead letter's retry: published to this context's queue only, never to the
    #: event's fanout exchange (the other subscribers handled it). Empty: routed as usual.
    redeliver_to = models.CharField(max_length=100, blank=True, default="")

    objects = OutboxQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["message_id"], condition=models.Q(redeliver_to=""), name="outbox_message_id_once"
            ),
        ]
        indexes = [
            # The relay's claim and its next wake-up: due rows in order, without
            # reading past the rows scheduled for later.
            models.Index(
                fields=["available_at", "id"],
                name="outbox_due_idx",
                condition=models.Q(published_at__isnull=True),
            ),
            # The retention purge: published rows oldest first.
            models.Index(fields=["published_at"], name="outbox_published_idx"),
        ]

    def __str__(self):
        return f"{self.message_type} {self.message_id}"


class InboxMessage(models.Model):
    """A message a consumer has handled: inserted in the handler's transaction.

    The unique (message id, consumer) pair is what makes a redelivery change
    nothing: the second insert fails and the handler does not run again. One
    event has one id for all its subscribers, so the consumer is part of the key.
    """

    message_id = models.UUIDField()
    consumer = models.CharField(max_length=255)
    message_type = models.CharField(max_length=200, db_index=True)
    correlation_id = models.UUIDField(null=True, db_index=True)
    handled_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-handled_at"]
        constraints = [
            models.UniqueConstraint(fields=["message_id", "consumer"], name="inbox_once_per_consumer"),
        ]

    def __str__(self):
        return f"{self.message_type} {self.message_id} → {self.consumer}"


class DeadLetter(models.Model):
    """A message a consumer could not process: kept for a person to look at, and act on.

    A person retries it (back to the one consumer that failed, through the
    outbox) or discards it with a reason; each act is a ``DeadLetterAction``.
    A retry that fails again makes a new dead letter.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RETRIED = "retried", "Retried"
        DISCARDED = "discarded", "Discarded"

    class Reason(models.TextChoices):
        HANDLER_FAILED = "handler_failed", "Handler failed after all retries"
        INVALID_ENVELOPE = "invalid_envelope", "Invalid or undecodable envelope"
        INVALID_DATA = "invalid_data", "Data does not match the contract"
        UNKNOWN_TYPE = "unknown_type", "Unknown message type"
        NEWER_VERSION = "newer_version", "Newer version than the consumer's code"
        UNREADABLE = "unreadable", "Not a task message the worker can read"
        BROKER = "broker", "Dead-lettered by the broker"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    message_id = models.UUIDField(null=True, db_index=True)
    message_type = models.CharField(max_length=200, blank=True, db_index=True)
    #: The conversation the message belongs to, when its envelope could be read.
    correlation_id = models.UUIDField(null=True, blank=True, db_index=True)
    #: The context whose consumer gave up (its queue is where a retry goes).
    context = models.CharField(max_length=100, db_index=True)
    consumer = models.CharField(max_length=255, blank=True)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    #: The exception's class (``ValidationError``, a handler's ``KeyError``); empty when
    #: no exception was raised. Failures are grouped by it and by consumer.
    exception_type = models.CharField(max_length=200, blank=True, db_index=True)
    error = models.TextField()
    traceback = models.TextField(blank=True)
    #: The message as received (envelope or raw body) and its delivery headers. A body
    #: whose JSON is over BUS_DEAD_LETTER_BODY_LIMIT is kept as the start of that JSON, as text.
    body = models.JSONField(null=True)
    #: Bytes of the body as it arrived (as JSON when the consumer had already read it);
    #: unknown for dead letters recorded before this was.
    body_size = models.PositiveIntegerField("body size (bytes)", null=True)
    body_truncated = models.BooleanField(default=False)
    headers = models.JSONField(default=dict)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("retry_deadletter", "Can retry dead letters"),
            ("discard_deadletter", "Can discard dead letters"),
        ]

    def __str__(self):
        # An unreadable delivery may have no message id: the dead letter's own names it then.
        return f"{self.message_type or 'unreadable message'} {self.message_id or self.id} ({self.get_reason_display()})"


class DeadLetterAction(models.Model):
    """Who retried, discarded or reopened a dead letter, when, and why: its repair history."""

    class Action(models.TextChoices):
        RETRIED = "retried", "Retried"
        DISCARDED = "discarded", "Discarded"
        REOPENED = "reopened", "Reopened"

    dead_letter = models.ForeignKey(DeadLetter, related_name="actions", on_delete=models.CASCADE)
    action = models.CharField(max_length=16, choices=Action.choices)
    #: The admin user, if the act came from the admin.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    #: Who did it, in words that outlive the user row ("admin", "cli:root@host").
    actor = models.CharField(max_length=255)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    #: Why it was discarded or reopened (required then); empty for a retry.
    note = models.TextField(blank=True)
    #: The outbox row a retry wrote. Not a database constraint: the retention purge
    #: deletes published rows in bulk without looking here; a purged row is just gone.
    outbox_message = models.ForeignKey(
        OutboxMessage, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )

    class Meta:
        ordering = ["at", "id"]

    def __str__(self):
        return f"{self.get_action_display()} by {self.actor}"
