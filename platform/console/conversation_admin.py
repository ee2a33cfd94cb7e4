"""The conversation page in the admin, and the links that lead to it from every row.

The page (``admin:messaging_conversation``) shows one conversation's timeline
and sequence diagram to staff who may view the outbox, inbox and dead letters
(task results too, if they may view those). It takes any id a person has at
hand: a conversation's correlation id (a checkout's is its order id), or a
message id, which leads to that message's conversation.

The links come from the bus's ``messaging.admin_mixins.ConversationLinkAdmin``,
which a context's admin uses too; this module serves the page they lead to.
"""

from __future__ import annotations

import re
import uuid

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from console.conversation import conversation_of, correlation_id_of_message
from console.conversation_diagram import sequence_diagram
from console.conversation_search import search_envelopes
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.admin_mixins import LINK_FIELD, ConversationLinkAdmin, conversation_url, short_id

#: What a person needs to see a conversation: it is made of these tables' rows.
VIEW_PERMISSIONS = tuple(
    f"{model._meta.app_label}.view_{model._meta.model_name}" for model in (OutboxMessage, InboxMessage, DeadLetter)
)
#: Task results are shown to those who may also view them.
VIEW_TASK_RESULTS = "django_celery_results.view_taskresult"
#: The message id in a task result's keyword-argument repr: ``{'envelope': <type id=...>}``
#: as the bus sends it, or ``'id': '...'`` in a whole envelope's repr.
_MESSAGE_ID_IN_REPR = re.compile(r"\bid['\"]?\s*[=:]\s*['\"]?([0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})")


class OpenConversationForm(forms.Form):
    id = forms.UUIDField(label="Order, conversation or message id",
                         widget=forms.TextInput(attrs={"size": 40, "placeholder": "a UUID"}))


class _IdFilter(admin.SimpleListFilter):
    """Filters a list by an id given in the address (a link sets it); shows it while it is set."""

    #: Another choice than a value, e.g. ("none", "...") for rows where the id is empty.
    empty_choice: tuple[str, str] | None = None

    def lookups(self, request, model_admin):
        choices = [self.empty_choice] if self.empty_choice else []
        if self.value() and self.value() != "none":
            choices.append((self.value(), str(self.value())[:8]))
        return choices

    def queryset(self, request, queryset):
        if self.value() == "none" and self.empty_choice:
            return queryset.filter(**{f"{self.parameter_name}__isnull": True})
        if self.value():
            return queryset.filter(**{self.parameter_name: self.value()})
        return queryset


class ConversationFilter(_IdFilter):
    title = "conversation"
    parameter_name = "correlation_id"


class CauseFilter(_IdFilter):
    title = "caused by"
    parameter_name = "causation_id"
    empty_choice = ("none", "Nothing: first of its conversation")


class MessageConversationAdmin(ConversationLinkAdmin):
    """For the bus's message tables: the conversation link and filter, by correlation id."""

    conversation_field = "correlation_id"
    # The bus's own records are what holds a conversation up, not what is held up.
    shows_dead_letters = False

    def conversation_key(self, obj):
        # A dead letter whose envelope could not be read has no conversation, but maybe a message id.
        return obj.correlation_id or obj.message_id

    #: The list columns it adds, after the message type's.
    tracing_columns: tuple[str, ...] = (LINK_FIELD,)

    def get_list_display(self, request):
        columns = [column for column in super().get_list_display(request) if column != LINK_FIELD]
        at = columns.index("message_type") + 1 if "message_type" in columns else len(columns)
        return [*columns[:at], *self.tracing_columns, *columns[at:]]

    def get_list_filter(self, request):
        return [*super().get_list_filter(request), ConversationFilter]


class OutboxConversationAdmin(MessageConversationAdmin):
    """The outbox also shows who sent a message and what caused it, finds messages by any value
    in them, and serves the conversation page."""

    tracing_columns = ("source", "cause_link", LINK_FIELD)

    def get_list_filter(self, request):
        return [*super().get_list_filter(request), "source", CauseFilter]

    @admin.display(description="caused by", ordering="causation_id")
    def cause_link(self, obj: OutboxMessage) -> str:
        if obj.causation_id is None:
            return "—"
        url = f"{conversation_url(obj.correlation_id)}#message-{obj.causation_id}"
        return format_html('<a href="{}">{}</a>', url, short_id(obj.causation_id))

    def get_search_results(self, request, queryset, search_term):
        # The envelope holds the message's id, type, sender, conversation, cause and data:
        # one indexed match finds a message by any of them.
        return search_envelopes(queryset, search_term), False

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("conversation/", view(self.open_conversation_view), name="messaging_conversation_open"),
            path("conversation/<uuid:some_id>/", view(self.conversation_view), name="messaging_conversation"),
            *super().get_urls(),
        ]

    def open_conversation_view(self, request):
        self._check_permissions(request)
        form = OpenConversationForm(request.GET or None)
        if form.is_valid():
            return HttpResponseRedirect(conversation_url(form.cleaned_data["id"]))
        return self._render(request, form=form, conversation=None, title="Open a conversation")

    def conversation_view(self, request, some_id: uuid.UUID):
        self._check_permissions(request)
        conversation = conversation_of(some_id, with_task_results=request.user.has_perm(VIEW_TASK_RESULTS))
        if not conversation.steps:
            correlation_id = correlation_id_of_message(some_id)
            if correlation_id and correlation_id != some_id:
                return HttpResponseRedirect(f"{conversation_url(correlation_id)}#message-{some_id}")
        return self._render(
            request, form=OpenConversationForm(initial={"id": some_id}), conversation=conversation,
            title=f"Conversation {some_id}", diagram=sequence_diagram(conversation) if conversation.steps else "",
            lists={model._meta.verbose_name_plural: self._filtered_list(model, some_id)
                   for model in (OutboxMessage, InboxMessage, DeadLetter)},
        )

    def _check_permissions(self, request) -> None:
        if not request.user.has_perms(VIEW_PERMISSIONS):
            raise PermissionDenied

    def _filtered_list(self, model, correlation_id: uuid.UUID) -> str:
        opts = model._meta
        return f"{reverse(f'admin:{opts.app_label}_{opts.model_name}_changelist')}?correlation_id={correlation_id}"

    def _render(self, request, **context):
        return TemplateResponse(request, "admin/messaging/conversation.html", {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "open_url": reverse("admin:messaging_conversation_open"),
            **context,
        })


class TaskResultConversationAdmin(ConversationLinkAdmin):
    """For django-celery-results' task results: a delivery's task arguments name its message."""

    def conversation_key(self, obj):
        found = _MESSAGE_ID_IN_REPR.search(obj.task_kwargs or "")
        return found.group(1) if found else None

