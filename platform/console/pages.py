"""The bus's own admin pages: an overview of its tables, a picture of its topology, and its
AsyncAPI document as tables (with the raw document to download).

Each is an admin view (``admin.site.admin_view``: staff login, the admin's look and
breadcrumbs) and each also needs view permission on what it shows; a user without
it gets 403. ``config.urls`` mounts ``urlpatterns`` under ``admin/messaging/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode

from console import asyncapi_tables
from console.activity_plot import activity_svg
from console.display import duration_text
from console.overview import handled_per_minute, process_rows
from messaging import asyncapi as asyncapi_document
from messaging import brokers, bus_state
from messaging.bus_state import dead_letters_by_consumer, outbox_backlog
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.topology import Topology
from console.topology_diagram import diagram_svg, message_flows

app_name = "bus"

#: Seconds between the overview page's own reloads: the numbers an operator watches move.
OVERVIEW_REFRESH_SECONDS = 10

#: The overview counts rows of all three bus tables and links to their lists.
OVERVIEW_PERMISSIONS = tuple(
    f"messaging.view_{model._meta.model_name}" for model in (OutboxMessage, InboxMessage, DeadLetter)
)


def may_see_overview(user) -> bool:
    return user.has_perms(OVERVIEW_PERMISSIONS)


def may_see_topology(user) -> bool:
    """The topology is derived from code, not rows: anyone who sees the bus's app may see it."""
    return user.has_module_perms("messaging")


@dataclasses.dataclass(frozen=True)
class Page:
    title: str
    url_name: str
    allowed: Callable[[object], bool]


#: The pages, in the order the admin index lists them.
PAGES = (
    Page("Overview", "bus:overview", may_see_overview),
    Page("Topology", "bus:topology", may_see_topology),
    # Derived from code, as the topology is: the same people may read it.
    Page("AsyncAPI", "bus:asyncapi", may_see_topology),
)


def pages_for(user) -> list[dict]:
    """The pages ``user`` may open, as ``title`` and ``url``, for the admin index."""
    return [{"title": page.title, "url": reverse(page.url_name)} for page in PAGES if page.allowed(user)]


def home(request):
    """The platform has no public site: "/" (and the admin's "View site") opens the bus
    overview for those allowed to see it, the admin index for everyone else."""
    if request.user.is_active and request.user.is_staff and may_see_overview(request.user):
        return redirect("bus:overview")
    return redirect("admin:index")


def _changelist(model, **filters) -> str:
    url = reverse(f"admin:messaging_{model._meta.model_name}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def _render(request, template: str, title: str, context: dict) -> TemplateResponse:
    return TemplateResponse(request, template, {
        **admin.site.each_context(request),
        "title": title,
        "app_label": "messaging",
        "app_verbose_name": OutboxMessage._meta.app_config.verbose_name,
        **context,
    })


def overview(request):
    if not may_see_overview(request.user):
        raise PermissionDenied
    now = timezone.now()
    backlog = outbox_backlog(now)
    minutes = handled_per_minute(now)
    window_start = minutes[0].minute
    dead_letters = [
        {**row, "url": _changelist(DeadLetter, context=row["context"], consumer=row["consumer"])}
        for row in dead_letters_by_consumer()
    ]
    queues = bus_state.queues()
    return _render(request, "admin/messaging/overview.html", "Message bus overview", {
        "now": now,
        "refresh_seconds": OVERVIEW_REFRESH_SECONDS,
        "processes": process_rows(bus_state.processes()),
        # None: the broker did not answer in time (the page says so rather than wait).
        "queues": queues,
        "retrying": None if queues is None else bus_state.retrying_now(queues),
        "retries_wait_in_worker": brokers.current().retries_wait_in_worker,
        "backlog": backlog,
        "oldest_due_age": duration_text(now - backlog.oldest_due_since) if backlog.oldest_due_since else None,
        # Unpublished rows, split by whether their time had come at ``now``.
        "due_url": _changelist(OutboxMessage, published_at__isnull="True", available_at__lte=now.isoformat()),
        "scheduled_url": _changelist(OutboxMessage, published_at__isnull="True", available_at__gt=now.isoformat()),
        "dead_letters": dead_letters,
        "dead_letters_total": sum(row["count"] for row in dead_letters),
        "dead_letters_url": _changelist(DeadLetter),
        "handled_total": sum(m.count for m in minutes),
        "handled_peak": max(m.count for m in minutes),
        "handled_url": _changelist(InboxMessage, handled_at__gte=window_start.isoformat()),
        "activity_svg": activity_svg(minutes),
        "window_start": window_start,
    })


def topology(request):
    if not may_see_topology(request.user):
        raise PermissionDenied
    flows = message_flows(Topology().describe())
    return _render(request, "admin/messaging/topology.html", "Message topology", {
        "flows": flows,
        "diagram_svg": diagram_svg(flows),
    })


def asyncapi(request):
    if not may_see_topology(request.user):
        raise PermissionDenied
    document = asyncapi_document.document()
    return _render(request, "admin/messaging/asyncapi.html", "AsyncAPI document", {
        "document": document,
        "servers": document["servers"],
        "channels": asyncapi_tables.channels(document),
        "operations": asyncapi_tables.operations_by_context(document),
        # Not "messages": the admin's templates show that name as Django's flash messages.
        "contract_messages": asyncapi_tables.messages(document),
    })


def asyncapi_json(request):
    """The raw document, as ``manage.py bus_asyncapi --format json`` writes it."""
    if not may_see_topology(request.user):
        raise PermissionDenied
    response = JsonResponse(asyncapi_document.document(), json_dumps_params={"indent": 2, "ensure_ascii": False})
    response["Content-Disposition"] = 'attachment; filename="asyncapi.json"'
    return response


urlpatterns = [
    path("overview/", admin.site.admin_view(overview), name="overview"),
    path("topology/", admin.site.admin_view(topology), name="topology"),
    path("asyncapi/", admin.site.admin_view(asyncapi), name="asyncapi"),
    path("asyncapi.json", admin.site.admin_view(asyncapi_json), name="asyncapi-json"),
]
