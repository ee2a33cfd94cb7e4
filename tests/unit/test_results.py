"""Task results: one row per task id, written by one upsert."""

import pytest
from celery import current_app, states
from django_celery_results.models import TaskResult

pytestmark = pytest.mark.django_db


def test_a_second_store_of_the_same_task_updates_its_row():
    backend = current_app.backend
    backend.store_result("task-1", {"handled": ["a"]}, states.STARTED)
    started = TaskResult.objects.get(task_id="task-1")

    backend.store_result("task-1", {"handled": ["a", "b"]}, states.SUCCESS)

    row = TaskResult.objects.get(task_id="task-1")
    assert (row.status, backend.decode_content(row, row.result)) == (states.SUCCESS, {"handled": ["a", "b"]})
    assert row.date_created == started.date_created
    # SUCCESS after STARTED keeps when the task started.
    assert row.date_started is not None and row.date_started == started.date_started
    assert backend.get_task_meta("task-1")["status"] == states.SUCCESS


def test_a_result_meeting_a_lost_connection_is_stored_once_the_database_answers(monkeypatch):
    import psycopg
    from django.db import OperationalError

    from messaging import results

    upsert, failures = results._upsert, []

    def database_away_twice(rows, connection):
        if len(failures) < 2:
            failures.extend(row.task_id for row in rows)
            raise OperationalError("connection failed") from psycopg.OperationalError("connection failed")
        upsert(rows, connection)

    monkeypatch.setattr(results, "_upsert", database_away_twice)
    current_app.backend.store_result("task-2", {"handled": ["a"]}, states.SUCCESS)

    assert failures == ["task-2", "task-2"]
    assert TaskResult.objects.get(task_id="task-2").status == states.SUCCESS
