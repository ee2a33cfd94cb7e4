"""Read-only views of the bus's tables: what was sent, handled and given up on."""

from django.contrib import admin
from django_celery_results.admin import TaskResultAdmin as CeleryTaskResultAdmin
from django_celery_results.models import TaskResult

from messaging.conversation_admin import (
    MessageConversationAdmin,
    OutboxConversationAdmin,
    TaskResultConversationAdmin,
)
from messaging.models import DeadLetter, InboxMessage, OutboxMessage


class ReadOnlyAdmin(admin.ModelAdmin):
    """Messages are records of what happened: nobody edits them by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(OutboxMessage)
class OutboxMessageAdmin(OutboxConversationAdmin, ReadOnlyAdmin):
    list_display = ("id", "message_type", "kind", "message_id", "created_at", "available_at", "published_at", "attempts")
    list_filter = ("kind", ("published_at", admin.EmptyFieldListFilter), "message_type")
    search_fields = ("message_id", "correlation_id", "message_type")
    date_hierarchy = "created_at"


@admin.register(InboxMessage)
class InboxMessageAdmin(MessageConversationAdmin, ReadOnlyAdmin):
    list_display = ("message_id", "consumer", "message_type", "handled_at")
    list_filter = ("consumer", "message_type")
    search_fields = ("message_id", "correlation_id", "consumer")
    date_hierarchy = "handled_at"


@admin.register(DeadLetter)
class DeadLetterAdmin(MessageConversationAdmin, ReadOnlyAdmin):
    list_display = ("created_at", "message_type", "context", "reason", "message_id", "attempts", "body_size")
    list_filter = ("reason", "context", "message_type", "body_truncated")
    search_fields = ("message_id", "message_type", "consumer", "error")
    date_hierarchy = "created_at"


# django-celery-results registers its own; this one adds the way to a delivery's conversation.
admin.site.unregister(TaskResult)


@admin.register(TaskResult)
class TaskResultAdmin(TaskResultConversationAdmin, CeleryTaskResultAdmin):
    pass
