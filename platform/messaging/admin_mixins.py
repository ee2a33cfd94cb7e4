"""What a context's admin takes from the bus: records nobody edits, and a link from
a row to its conversation.

The conversation page itself belongs to the operator console (``console``): the
link names its URL (``admin:messaging_conversation``) and never imports it, so a
project without the console shows "—" where the link would be, as Django's admin
does for an object without ``get_absolute_url``.

A context links its own rows to their conversation with one line naming the field
that holds a correlation id::

    class OrderAdmin(ConversationLinkAdmin, ReadOnlyAdmin):
        conversation_field = "id"

A row whose conversation has open dead letters says so beside the link ("held up:
1 dead letter"), linking to those dead letters in the console's list
(``admin:messaging_deadletter_changelist``, filtered by the correlation id). The
count is a subquery of the page's own query: a list of a hundred orders is one query.
"""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from messaging.models import DeadLetter

#: Characters of an id shown in a list: enough to tell rows apart.
SHORT_ID_LENGTH = 8
#: The field of the detail pages that links to the conversation.
LINK_FIELD = "conversation_link"
#: The console's conversation page, by name (the bus never imports the console).
CONVERSATION_URL_NAME = "admin:messaging_conversation"
#: The console's dead-letter list, by name; ``?correlation_id=`` filters it to one conversation.
DEAD_LETTERS_URL_NAME = "admin:messaging_deadletter_changelist"
#: The annotation holding how many open dead letters a row's conversation has.
OPEN_DEAD_LETTERS = "conversation_open_dead_letters"


def short_id(value) -> SafeString | None:
    """An id (a UUID, a task id) cut to its first characters on one line, for a list
    column; the whole id shows on hover and is what search and the detail page use.
    None for no id: the changelist shows its usual empty marker."""
    if value is None or value == "":
        return None
    text = str(value)
    return format_html(
        '<span class="bus-id" title="{}" style="white-space: nowrap">{}</span>', text, text[:SHORT_ID_LENGTH]
    )


def conversation_url(some_id: uuid.UUID | str) -> str | None:
    """The conversation page of a correlation id (or of a message id's conversation);
    None where no console serves one."""
    try:
        return reverse(CONVERSATION_URL_NAME, args=[some_id])
    except NoReverseMatch:
        return None


def dead_letters_url(correlation_id: uuid.UUID | str) -> str | None:
    """The console's list of a conversation's dead letters (open ones, as the list shows
    by default); None where no console serves one."""
    try:
        return f"{reverse(DEAD_LETTERS_URL_NAME)}?correlation_id={correlation_id}"
    except NoReverseMatch:
        return None


def with_open_dead_letters(queryset: QuerySet, correlation_field: str) -> QuerySet:
    """``queryset`` with each row's count of open dead letters in its conversation
    (``OPEN_DEAD_LETTERS``), counted in the same query."""
    open_in_conversation = (
        DeadLetter.objects.filter(correlation_id=OuterRef(correlation_field), status=DeadLetter.Status.OPEN)
        .order_by().values("correlation_id").annotate(count=Count("id")).values("count")
    )
    return queryset.annotate(**{OPEN_DEAD_LETTERS: Coalesce(Subquery(open_in_conversation), 0,
                                                            output_field=IntegerField())})


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records of what happened, or state that changes only through messages: nobody edits them by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ConversationLinkAdmin:
    """A ``ModelAdmin`` mixin: a link to the row's conversation, in the list and on the detail page."""

    #: The field whose value is a correlation id (or a message id): one line per model.
    conversation_field: str = ""
    #: Whether a row says when open dead letters hold its conversation up (a context's rows do).
    shows_dead_letters: bool = True

    def conversation_key(self, obj) -> uuid.UUID | str | None:
        return getattr(obj, self.conversation_field)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if self.shows_dead_letters and self.conversation_field:
            queryset = with_open_dead_letters(queryset, self.conversation_field)
        return queryset

    @admin.display(description="conversation")
    def conversation_link(self, obj) -> str:
        key = self.conversation_key(obj) if obj is not None else None
        url = conversation_url(key) if key else None
        held_up = _held_up(key, getattr(obj, OPEN_DEAD_LETTERS, 0)) if key else ""
        if url is None:
            return held_up or "—"
        link = format_html('<a class="bus-conversation" href="{}"><code title="{}">{}</code> \u2192</a>',
                           url, key, str(key)[:SHORT_ID_LENGTH])
        return format_html("{} {}", link, held_up) if held_up else link

    def get_list_display(self, request):
        return [*super().get_list_display(request), LINK_FIELD]

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), LINK_FIELD]

    def get_fieldsets(self, request, obj=None):
        # First on the page, whatever fieldsets the admin declares (or none: then
        # Django lists the readonly fields last, and the link is taken from there).
        fieldsets = [
            (name, {**options, "fields": [field for field in options["fields"] if field != LINK_FIELD]})
            for name, options in super().get_fieldsets(request, obj)
        ]
        return [("Conversation", {"fields": [LINK_FIELD]}), *fieldsets] if obj is not None else fieldsets


def _held_up(correlation_id, open_dead_letters: int) -> str:
    if not open_dead_letters:
        return ""
    text = f"held up: {open_dead_letters} dead letter{'' if open_dead_letters == 1 else 's'}"
    url = dead_letters_url(correlation_id)
    style = "color: var(--error-fg, #ba2121); white-space: nowrap"
    if url is None:
        return format_html('<strong class="bus-held-up" style="{}">{}</strong>', style, text)
    return format_html('<a class="bus-held-up" href="{}" style="{}"><strong>{}</strong></a>', url, style, text)
