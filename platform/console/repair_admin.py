"""The dead-letter admin's repair tools: retry and discard (one, a selection, a group),
reopen a discarded one, the failure groups page, and each dead letter's repair history.

Everything goes through ``messaging.repair``, the service ``manage.py
dead_letters`` uses too. Retrying needs the ``messaging.retry_deadletter``
permission, discarding and reopening (undoing a discard) ``messaging.discard_deadletter``;
each act is recorded under the admin user's name. Repair changes state, so it is POST only.
"""

import dataclasses
from collections.abc import Callable

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from messaging import repair
from messaging.models import DeadLetter, DeadLetterAction

@dataclasses.dataclass(frozen=True)
class NoteAct:
    """An act that needs a note saying why: its service, and the words of its page."""

    service: Callable[..., repair.RepairReport]
    #: The changelist action that posts the page back.
    action: str
    title: str
    intro: str
    question: str
    submit: str
    done: str


DISCARD = NoteAct(repair.discard, "discard_selected", "Discard dead letters",
                  "Discarding archives these dead letters: nothing is sent, and the note stays in each one's "
                  "repair history. A discard can be undone (Reopen).",
                  "Why do these need no repair?", "Discard", "discarded")
REOPEN = NoteAct(repair.reopen, "reopen_selected", "Reopen dead letters",
                 "Reopening makes these discarded dead letters open again, to be retried or discarded: nothing "
                 "is sent yet, and the note stays in each one's repair history.",
                 "Why do these need repair after all?", "Reopen", "reopened")

#: What the status filter shows when none is chosen: what still needs a person.
DEFAULT_STATUS = DeadLetter.Status.OPEN
ALL_STATUSES = "all"


class StatusFilter(admin.SimpleListFilter):
    """Open dead letters unless another status (or all) is chosen."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [*DeadLetter.Status.choices, (ALL_STATUSES, "All")]

    def queryset(self, request, queryset):
        status = self.value() or DEFAULT_STATUS
        return queryset if status == ALL_STATUSES else queryset.filter(status=status)

    def choices(self, changelist):
        # No "All" of Django's own: unfiltered here means open, and "All" is a choice above.
        current = self.value() or DEFAULT_STATUS
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }


class DeadLetterActionInline(admin.TabularInline):
    """The repair history: who retried, discarded or reopened it, when, why, and what happened next."""

    model = DeadLetterAction
    verbose_name = "repair"
    verbose_name_plural = "repair history"
    fields = ("at", "action", "actor", "note", "what_happened")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        # Part of the dead letter's record: whoever may see the dead letter sees its history.
        return request.user.has_perm("messaging.view_deadletter")

    @admin.display(description="what happened next")
    def what_happened(self, action: DeadLetterAction):
        if action.action != DeadLetterAction.Action.RETRIED:
            return "—"
        outcome = repair.retry_outcome(action)
        if outcome.dead_letter is not None:
            url = reverse("admin:messaging_deadletter_change", args=[outcome.dead_letter.pk])
            return format_html('{} (<a href="{}">the new dead letter</a>)', outcome.detail, url)
        return outcome.detail


class DeadLetterRepairMixin:
    """Retry and discard actions, per-row buttons and the failure groups page for ``DeadLetterAdmin``."""

    actions = ["retry_selected", "discard_selected", "reopen_selected"]
    inlines = [DeadLetterActionInline]
    change_form_template = "admin/messaging/deadletter/change_form.html"
    change_list_template = "admin/messaging/deadletter/change_list.html"

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("messaging.retry_deadletter")

    def has_discard_permission(self, request) -> bool:
        return request.user.has_perm("messaging.discard_deadletter")

    def get_urls(self):
        def view(function):
            return self.admin_site.admin_view(function)

        return [
            path("groups/", view(self.groups_view), name="messaging_deadletter_groups"),
            path("<uuid:pk>/retry/", view(self.retry_view), name="messaging_deadletter_retry"),
            path("<uuid:pk>/discard/", view(self.discard_view), name="messaging_deadletter_discard"),
            path("<uuid:pk>/reopen/", view(self.reopen_view), name="messaging_deadletter_reopen"),
            *super().get_urls(),
        ]

    # Actions on a selection

    @admin.action(description="Retry selected dead letters (to the consumer that failed)", permissions=["retry"])
    def retry_selected(self, request, queryset: QuerySet):
        self._announce(request, repair.retry(queryset, actor=request.user.get_username(), user=request.user),
                       "sent back to the consumer that failed")

    @admin.action(description="Discard selected dead letters…", permissions=["discard"])
    def discard_selected(self, request, queryset: QuerySet):
        return self._with_note(request, queryset, DISCARD)

    @admin.action(description="Reopen selected discarded dead letters…", permissions=["discard"])
    def reopen_selected(self, request, queryset: QuerySet):
        return self._with_note(request, queryset, REOPEN)

    # One dead letter (the buttons on its page)

    def retry_view(self, request, pk):
        dead_letter = self._one_for(request, pk, self.has_retry_permission)
        self._announce(request, repair.retry([dead_letter], actor=request.user.get_username(), user=request.user),
                       "sent back to the consumer that failed")
        return HttpResponseRedirect(reverse("admin:messaging_deadletter_change", args=[pk]))

    def discard_view(self, request, pk):
        return self._one_with_note(request, pk, DISCARD)

    def reopen_view(self, request, pk):
        return self._one_with_note(request, pk, REOPEN)

    # The failure groups page

    def groups_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return self._act_on_group(request)
        changelist = reverse("admin:messaging_deadletter_changelist")
        groups = [
            {**group, "reason_label": DeadLetter.Reason(group["reason"]).label,
             "fields": [(field, group[field]) for field in repair.GROUP_FIELDS],
             "members_url": f"{changelist}?{urlencode({field: group[field] for field in repair.GROUP_FIELDS})}"}
            for group in repair.failure_groups()
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Failure groups",
            "subtitle": "open dead letters by error and consumer",
            "groups": groups,
            "can_retry": self.has_retry_permission(request),
            "can_discard": self.has_discard_permission(request),
        }
        return TemplateResponse(request, "admin/messaging/deadletter/groups.html", context)

    def _act_on_group(self, request):
        group = {field: request.POST.get(field, "") for field in repair.GROUP_FIELDS}
        members = repair.group_members(group)
        if request.POST.get("action") == "retry":
            if not self.has_retry_permission(request):
                raise PermissionDenied
            self._announce(request, repair.retry(members, actor=request.user.get_username(), user=request.user),
                           "sent back to the consumer that failed")
        elif request.POST.get("action") == "discard":
            if not self.has_discard_permission(request):
                raise PermissionDenied
            note = request.POST.get("note", "").strip()
            if not note:
                self.message_user(request, "A discard needs a note saying why.", messages.ERROR)
            else:
                self._act_with_note(request, members, DISCARD, note)
        return HttpResponseRedirect(reverse("admin:messaging_deadletter_groups"))

    # Shared

    def _one_for(self, request, pk, permitted) -> DeadLetter:
        if request.method != "POST":
            raise PermissionDenied  # acts change state: never on a GET a link or a prefetch could send
        if not permitted(request):
            raise PermissionDenied
        return get_object_or_404(DeadLetter, pk=pk)

    def _with_note(self, request, queryset, act: NoteAct):
        note = request.POST.get("note", "").strip()
        if request.POST.get("confirmed") and note:
            self._act_with_note(request, queryset, act, note)
            return None
        # Django's pattern for an action that needs more input (as delete_selected does).
        return self._note_form(request, queryset, act, note_missing=bool(request.POST.get("confirmed")))

    def _one_with_note(self, request, pk, act: NoteAct):
        dead_letter = self._one_for(request, pk, self.has_discard_permission)
        queryset = DeadLetter.objects.filter(pk=dead_letter.pk)
        note = request.POST.get("note", "").strip()
        if not note:
            return self._note_form(request, queryset, act, note_missing=bool(request.POST.get("confirmed")),
                                   form_url=request.path)
        self._act_with_note(request, queryset, act, note)
        return HttpResponseRedirect(reverse("admin:messaging_deadletter_change", args=[pk]))

    def _act_with_note(self, request, queryset, act: NoteAct, note: str) -> None:
        report = act.service(queryset, actor=request.user.get_username(), user=request.user, note=note)
        self._announce(request, report, act.done)

    def _note_form(self, request, queryset, act: NoteAct, *, note_missing: bool, form_url: str = ""):
        """The page asking why; it posts back as the changelist action, or to ``form_url`` for one row."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": act.title,
            "act": act,
            "dead_letters": queryset,
            "note_missing": note_missing,
            "form_url": form_url,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/messaging/deadletter/discard.html", context)

    def _announce(self, request, report: repair.RepairReport, done: str) -> None:
        if report.done:
            self.message_user(request, f"{len(report.done)} dead letter(s) {done}.", messages.SUCCESS)
        for dead_letter, why in report.refused:
            self.message_user(request, f"{dead_letter.message_type or 'dead letter'} {dead_letter.pk}: not done, "
                                       f"{why}.", messages.WARNING)
