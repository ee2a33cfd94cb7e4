"""Task results for Flower's neighbours (the admin), at the price of one statement.

django-celery-results stores a result with ``get_or_create`` and then ``save``:
a SELECT, then an INSERT in a transaction of its own or an UPDATE, each commit
waiting for PostgreSQL to flush its log; measured, that was a third of a
handled message's time. This backend writes the same row with one
``INSERT ... ON CONFLICT (task_id) DO UPDATE``.

On PostgreSQL that statement also turns off ``synchronous_commit`` for its own
transaction: the commit does not wait for the log flush. A result is a record
for people, not part of any promise (the inbox row, written with the handler's
effects, is what makes handling exactly-once), so the worst case — PostgreSQL
itself crashing within a fraction of a second — loses a few result rows and
nothing else.

A result is never given up for a lost database connection: the store is tried
again, on a new connection, until the database answers (settings
``CELERY_RESULT_BACKEND_ALWAYS_RETRY``): raising instead would fail a task whose
handlers had committed, and the worker would reject its message to the
dead-letter queue.
"""

from celery import states
from django.db import connections, router
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from messaging.database import close_if_broken, connection_lost
from messaging.storable import storable


class ResultBackend(DatabaseBackend):
    """django-celery-results' ``django-db`` backend, writing each result in one statement."""

    def exception_safe_to_retry(self, exc) -> bool:
        # django-celery-results retries only an InterfaceError; PostgreSQL being down
        # or restarting is an OperationalError with psycopg 3.
        if connection_lost(exc):
            close_if_broken(connections[router.db_for_write(TaskResult)])
            return True
        return False

    def _store_result(self, task_id, result, status, traceback=None, request=None, using=None):
        row = self.result_row(task_id, result, status, traceback=traceback, request=request)
        _upsert([row], connections[using or router.db_for_write(TaskResult)])
        return row.result

    def result_row(self, task_id, result, status, *, traceback=None, request=None) -> TaskResult:
        """The row django-celery-results would store for this outcome (not saved)."""
        content_type, content_encoding, encoded_result = self.encode_content(result)
        meta = {**self._get_meta_from_request(request), "children": self.current_task_children(request)}
        _, _, encoded_meta = self.encode_content(meta)
        return TaskResult(
            task_id=task_id, status=status, result=encoded_result, meta=encoded_meta,
            content_type=content_type, content_encoding=content_encoding,
            date_started=timezone.now() if status == states.STARTED else None,
            **{"traceback": traceback, **self._get_extended_properties(request, traceback)},
        )

    def store_rows(self, rows: list[TaskResult]) -> None:
        """Store many results in one statement (a batch's: ``messaging.batch_run``), in the
        caller's transaction. A task id given twice keeps its last row."""
        _upsert(list({row.task_id: row for row in rows}.values()), connections[router.db_for_write(TaskResult)])


_TABLE = TaskResult._meta.db_table
_COLUMNS = [field for field in TaskResult._meta.concrete_fields if not field.primary_key]
#: What a later store of the same task id overwrites: all but the creation time, and
#: the start time only if it brings one (SUCCESS comes after STARTED).
_UPDATES = [
    f"{f.column} = COALESCE(EXCLUDED.{f.column}, {_TABLE}.{f.column})" if f.name == "date_started"
    else f"{f.column} = EXCLUDED.{f.column}"
    for f in _COLUMNS if f.name not in ("task_id", "date_created")
]
_ON_CONFLICT = f"ON CONFLICT (task_id) DO UPDATE SET {', '.join(_UPDATES)}"
_ROW = f"({', '.join(['%s'] * len(_COLUMNS))})"
# "WHERE true" keeps PostgreSQL from reading ON CONFLICT as a join's ON.
#: One row in a transaction of its own. The setting is local to the statement's own
#: transaction (in autocommit, the statement is the transaction).
_INSERT_ASYNC_COMMIT = (
    f"INSERT INTO {_TABLE} ({', '.join(field.column for field in _COLUMNS)}) "
    f"SELECT {', '.join(['%s'] * len(_COLUMNS))} "
    f"FROM (SELECT set_config('synchronous_commit', 'off', true)) AS settings WHERE true {_ON_CONFLICT}"
)
#: Rows inside a caller's transaction: the commit, and how it waits, stays the caller's.
_INSERT_PLAIN = f"INSERT INTO {_TABLE} ({', '.join(field.column for field in _COLUMNS)}) VALUES {{rows}} {_ON_CONFLICT}"


def _upsert(rows: list[TaskResult], connection) -> None:
    values = []
    for row in rows:
        # Any NUL a header carried into the name or argument reprs: PostgreSQL refuses it.
        values.extend(
            storable(value) if isinstance(value, str) else value
            for value in (field.get_db_prep_save(field.pre_save(row, add=True), connection) for field in _COLUMNS)
        )
    async_commit = len(rows) == 1 and connection.vendor == "postgresql" and connection.get_autocommit()
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_ASYNC_COMMIT if async_commit else _INSERT_PLAIN.format(rows=", ".join([_ROW] * len(rows))),
                       values)
