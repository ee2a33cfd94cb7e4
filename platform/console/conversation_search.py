"""Finding messages by any value in them: an order id, a SKU, a customer.

Every whitespace-separated term must appear, case-insensitively, somewhere in
the message's envelope (its id, type, sender, conversation, cause and data).
On PostgreSQL the match reads the trigram index the migration
``0006_outbox_envelope_search`` builds on the envelope's text, for terms of
three characters or more; on SQLite it reads the table.
"""

from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.utils.text import smart_split, unescape_string_literal

#: The annotation a search filters on: the envelope as text, the indexed expression.
ENVELOPE_TEXT = "envelope_text"


def search_envelopes(queryset: QuerySet, search: str) -> QuerySet:
    """``queryset`` (of outbox rows) narrowed to messages whose envelope contains every term of ``search``."""
    terms = [_unquoted(term) for term in smart_split(search)]
    terms = [term for term in terms if term]
    if not terms:
        return queryset
    queryset = queryset.alias(**{ENVELOPE_TEXT: Cast("envelope", output_field=TextField())})
    for term in terms:
        queryset = queryset.filter(**{f"{ENVELOPE_TEXT}__icontains": term})
    return queryset


def _unquoted(term: str) -> str:
    # As the admin's own search: a quoted phrase is one term.
    if term.startswith(('"', "'")) and term[0] == term[-1] and len(term) > 1:
        return unescape_string_literal(term)
    return term
