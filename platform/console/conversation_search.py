"""Finding messages by any value in them: an order id, a SKU, a customer.

Every whitespace-separated term must appear, case-insensitively, somewhere in
the message's envelope (its id, type, sender, conversation, cause and data),
or in one of the other columns a search names (a dead letter's error, say).
On PostgreSQL the outbox's match reads the trigram index the migration
``0006_outbox_envelope_search`` builds on the envelope's text, for terms of
three characters or more; on SQLite, and for dead letters (kept few), it reads the table.
"""

from collections.abc import Iterable

from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils.text import smart_split, unescape_string_literal

#: The annotation a search filters on: the envelope as text, the indexed expression.
ENVELOPE_TEXT = "envelope_text"


def search_envelopes(queryset: QuerySet, search: str, *, envelope_field: str = "envelope",
                     other_fields: Iterable[str] = ()) -> QuerySet:
    """``queryset`` narrowed to messages whose envelope (the outbox's ``envelope``, a dead
    letter's ``body``) or one of ``other_fields`` contains each term of ``search``."""
    terms = [_unquoted(term) for term in smart_split(search)]
    terms = [term for term in terms if term]
    if not terms:
        return queryset
    queryset = queryset.alias(**{ENVELOPE_TEXT: Cast(envelope_field, output_field=TextField())})
    for term in terms:
        anywhere = Q(**{f"{ENVELOPE_TEXT}__icontains": term})
        for field in other_fields:
            anywhere |= Q(**{f"{field}__icontains": term})
        queryset = queryset.filter(anywhere)
    return queryset


def _unquoted(term: str) -> str:
    # As the admin's own search: a quoted phrase is one term.
    if term.startswith(('"', "'")) and term[0] == term[-1] and len(term) > 1:
        return unescape_string_literal(term)
    return term
