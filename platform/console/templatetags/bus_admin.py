"""Template tags for the admin's pages around the bus."""

from django import template

from console.pages import pages_for

register = template.Library()


@register.inclusion_tag("admin/messaging/bus_pages.html", takes_context=True)
def bus_pages(context, caption: str) -> dict:
    """Links to the bus's pages the current user may open (none: nothing shown)."""
    return {"bus_pages": pages_for(context["request"].user), "caption": caption}
