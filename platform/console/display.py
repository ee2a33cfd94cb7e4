"""How the admin shows a record's values: JSON indented and highlighted, tracebacks as
written, long ids short.

Each function turns one value into safe HTML for a ModelAdmin display method, so any
admin (the bus's, a context's, django-celery-results') shows records the same way.
Highlighting is done here, on the server, with inline colours: no script and no
stylesheet for a page to forget.
"""

import json
from datetime import timedelta

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import JsonLexer, PythonTracebackLexer, TextLexer


# Spans only (nowrap); the block around them is ours. Inline styles, so the colours
# need no stylesheet on the page.
_FORMATTER = HtmlFormatter(noclasses=True, nowrap=True)
#: The code block: its own light background and text colour, so the highlighting reads
#: the same in the admin's light and dark themes; long lines scroll instead of wrapping.
_BLOCK_STYLE = (
    f"background: {_FORMATTER.style.background_color}; color: #1f1f1f; padding: 8px 10px; "
    "margin: 0; white-space: pre; overflow-x: auto; max-width: 100%; font-size: 0.8125rem;"
)


def code_html(text: str, lexer: Lexer) -> SafeString:
    """``text`` in a ``<pre>`` block, highlighted by ``lexer``; Pygments escapes it."""
    spans = highlight(text, lexer, _FORMATTER)
    return format_html('<pre class="bus-code" style="{}">{}</pre>', _BLOCK_STYLE, mark_safe(spans))


def json_html(value) -> SafeString:
    """A JSON value (as stored in a JSONField) indented by two and highlighted."""
    return code_html(json.dumps(value, indent=2, ensure_ascii=False), JsonLexer())


def json_text_html(text: str | None) -> SafeString | str:
    """Text that should hold JSON (a task's result): indented if it parses, else as written."""
    if not text:
        return ""
    try:
        value = json.loads(text)
    except ValueError:
        return code_html(text, TextLexer())
    return json_html(value)


def traceback_html(text: str | None) -> SafeString | str:
    """A Python traceback with its indentation and line breaks kept."""
    return code_html(text, PythonTracebackLexer()) if text else ""


def duration_text(delta: timedelta) -> str:
    """A duration to the second, largest units first: "42 s", "3 min 12 s", "2 h 5 min"."""
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"
