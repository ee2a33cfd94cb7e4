"""A trigram index on the outbox envelope's text, so a search by any value in a
message (an order id, a SKU) reads the index instead of every row.

PostgreSQL only: SQLite (the embedded default) has no trigram index, and its
search reads the table (``console.conversation_search``). ``pg_trgm`` is a
trusted extension (PostgreSQL 13+): the database's owner may create it; where the
platform's role may not, a superuser runs ``CREATE EXTENSION pg_trgm`` first.

Built CONCURRENTLY: the outbox takes every service's writes, and a plain CREATE
INDEX would hold them back until the index is built.
"""

from django.db import migrations

INDEX = "outbox_envelope_trgm_idx"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # The expression is the one Django writes for an icontains on the envelope
    # cast to text (UPPER(...) LIKE UPPER(...)): the planner matches it exactly.
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON messaging_outboxmessage "
        "USING gin (UPPER((envelope)::text) gin_trgm_ops)"
    )


def drop_index(apps, schema_editor):
    # The extension stays: something else in the database may use it by now.
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("messaging", "0005_outbox_causation_and_source"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index),
    ]
