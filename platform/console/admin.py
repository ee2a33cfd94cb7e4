"""Read-only views of the bus's tables: what was sent, handled and given up on.

Records read as people read them: JSON indented and highlighted, tracebacks as
written, ids short in lists (``console.display``), times to the second
(``config.formats``). Celery's task results are shown the same way, read-only too.
"""

from django.contrib import admin
from django_celery_results.admin import GroupResultAdmin as CeleryGroupResultAdmin
from django_celery_results.admin import TaskResultAdmin as CeleryTaskResultAdmin
from django_celery_results.models import GroupResult, TaskResult

from console.display import json_html, json_text_html, traceback_html
from console.repair_admin import DeadLetterRepairMixin, StatusFilter
from console.conversation_admin import (
    MessageConversationAdmin,
    OutboxConversationAdmin,
    TaskResultConversationAdmin,
)
from console.conversation_search import search_envelopes
from messaging.admin_mixins import ReadOnlyAdmin, short_id
from messaging.models import DeadLetter, InboxMessage, OutboxMessage

# The index lists the bus's overview and topology pages above the apps.
admin.site.index_template = "admin/messaging/index.html"


@admin.display(description="message id", ordering="message_id")
def short_message_id(obj):
    """A list column for any record with a ``message_id``."""
    return short_id(obj.message_id)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(OutboxConversationAdmin, ReadOnlyAdmin):
    list_display = (
        "id", "message_type", "kind", short_message_id, "created_at", "available_at", "published_at", "attempts",
    )
    list_filter = ("kind", ("published_at", admin.EmptyFieldListFilter), "message_type")
    search_fields = ("message_id", "correlation_id", "message_type")
    date_hierarchy = "created_at"
    fields = (
        "id", "message_id", "kind", "message_type", "source", "correlation_id", "causation_id", "redeliver_to",
        "created_at", "available_at", "published_at", "attempts", "last_error", "envelope_pretty",
    )
    readonly_fields = ("envelope_pretty",)

    @admin.display(description="envelope")
    def envelope_pretty(self, obj):
        return json_html(obj.envelope)


@admin.register(InboxMessage)
class InboxMessageAdmin(MessageConversationAdmin, ReadOnlyAdmin):
    list_display = (short_message_id, "consumer", "message_type", "handled_at")
    list_filter = ("consumer", "message_type")
    search_fields = ("message_id", "correlation_id", "consumer")
    date_hierarchy = "handled_at"
    fields = ("message_id", "consumer", "message_type", "correlation_id", "handled_at")


@admin.register(DeadLetter)
class DeadLetterAdmin(MessageConversationAdmin, DeadLetterRepairMixin, ReadOnlyAdmin):
    list_display = (
        "created_at", "message_type", "context", "reason", "exception_type", "status", short_message_id,
        "attempts", "body_size",
    )
    list_filter = (StatusFilter, "reason", "context", "exception_type", "consumer", "message_type", "body_truncated")
    search_fields = ("message_id", "correlation_id", "message_type", "consumer", "error")
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("id", "status", "message_id", "message_type", "correlation_id", "context", "consumer",
                           "created_at")}),
        ("Failure", {"fields": ("reason", "exception_type", "error", "traceback_pre", "attempts")}),
        ("Message as received", {"fields": ("body_pretty", "body_size", "body_truncated", "headers_pretty")}),
    )
    readonly_fields = ("traceback_pre", "body_pretty", "headers_pretty")

    def get_search_results(self, request, queryset, search_term):
        # The body is the message as received: an order id, a SKU or a customer in its data
        # finds the dead letter, as the outbox's search finds the message; so do its own columns.
        return search_envelopes(queryset, search_term, envelope_field="body", other_fields=self.search_fields), False

    @admin.display(description="traceback")
    def traceback_pre(self, obj):
        return traceback_html(obj.traceback)

    @admin.display(description="body")
    def body_pretty(self, obj):
        # A body cut at BUS_DEAD_LETTER_BODY_LIMIT is the start of its JSON, kept as text.
        return json_text_html(obj.body) if obj.body_truncated else json_html(obj.body)

    @admin.display(description="headers")
    def headers_pretty(self, obj):
        return json_html(obj.headers)


admin.site.unregister([TaskResult, GroupResult])


@admin.register(TaskResult)
class TaskResultAdmin(TaskResultConversationAdmin, ReadOnlyAdmin, CeleryTaskResultAdmin):
    """django-celery-results' admin (its filters, search and layout), read-only like
    every other record of a message, with its JSON and traceback made readable."""

    list_display = ("short_task_id", "task_name", "date_done", "status", "worker")
    # Celery's layout, with the result, its meta and the traceback made readable.
    fieldsets = (
        (None, {"fields": (
            "task_id", "task_name", "periodic_task_name", "status", "worker", "content_type", "content_encoding",
        )}),
        ("Parameters", {"fields": ("task_args", "task_kwargs")}),
        ("Result", {"fields": (
            "result_pretty", "date_created", "date_started", "date_done", "traceback_pre", "meta_pretty",
        )}),
    )
    readonly_fields = ("result_pretty", "traceback_pre", "meta_pretty")

    def get_readonly_fields(self, request, obj=None):
        # Celery's admin computes its own list (every field unless edits are allowed); here
        # nothing is editable anyway.
        return self.readonly_fields

    @admin.display(description="task id", ordering="task_id")
    def short_task_id(self, obj):
        return short_id(obj.task_id)

    @admin.display(description="result")
    def result_pretty(self, obj):
        return json_text_html(obj.result)

    @admin.display(description="traceback")
    def traceback_pre(self, obj):
        return traceback_html(obj.traceback)

    @admin.display(description="meta")
    def meta_pretty(self, obj):
        return json_text_html(obj.meta)


@admin.register(GroupResult)
class GroupResultAdmin(ReadOnlyAdmin, CeleryGroupResultAdmin):
    """Celery's group results, read-only (the bus sends no groups; Celery's admin lists them)."""
