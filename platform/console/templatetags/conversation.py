"""Template filters of the conversation page: times to the millisecond, short durations and ids."""

import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.filter
def clock(value: datetime.datetime | None) -> str:
    """``14:03:07.512``: a conversation's steps are often milliseconds apart."""
    if value is None:
        return ""
    local = timezone.localtime(value)
    return f"{local:%H:%M:%S}.{local.microsecond // 1000:03d}"


@register.filter
def duration(value: datetime.timedelta | None) -> str:
    """``0.8 ms``, ``412 ms``, ``2.35 s``, ``4 min 05 s``, ``1 h 02 min``; empty for None."""
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def short_id(value) -> SafeString:
    """The first eight characters of an id, the whole in a tooltip: enough to tell rows apart."""
    return format_html('<code title="{}">{}</code>', value, str(value)[:8])
