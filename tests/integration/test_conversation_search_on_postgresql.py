"""The outbox admin's search reads the trigram index PostgreSQL has (the embedded default,
on SQLite, searches without it: ``tests/process/console/test_conversation_search.py``)."""

import pytest
from django.db import connection
from django.urls import reverse

from tests.unit.console.test_conversation_search import OUTBOX, two_checkouts  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_the_search_reads_the_trigram_index(admin_client, two_checkouts, real_services):
    assert connection.vendor == "postgresql", "the index is PostgreSQL's: run with scripts/test"
    queryset = admin_client.get(reverse(OUTBOX), {"q": "alice-42"}).context["cl"].queryset

    with connection.cursor() as cursor:
        # A table this small is cheaper to read whole, or in id order along its primary key:
        # ask what else serves the query (a bitmap scan needs an index that matches it).
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        plan = queryset.explain()

    assert "Bitmap Index Scan on outbox_envelope_trgm_idx" in plan, plan
    assert len(queryset) == 4
