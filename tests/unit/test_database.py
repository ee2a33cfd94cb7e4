"""A lost database connection is told apart from a statement that failed."""

import sqlite3

import psycopg
import pytest
from django.db import IntegrityError, OperationalError

from messaging.delivery import HandlerFailedError
from messaging.database import connection_lost


def _raised_from(cause: BaseException, error: BaseException) -> BaseException:
    try:
        raise error from cause
    except BaseException as raised:
        return raised


def _handler_failed_from(error: BaseException) -> BaseException:
    # As a handler's database error reaches the consumer: psycopg's, wrapped by Django's.
    return _raised_from(_raised_from(error, OperationalError(str(error))), HandlerFailedError("a handler"))


@pytest.mark.parametrize("error", [
    psycopg.OperationalError("connection failed: Connection refused"),
    psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
    psycopg.InterfaceError("the connection is closed"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.CannotConnectNow("the database system is starting up"),
    psycopg.errors.ConnectionFailure("connection failure"),
])
def test_a_refused_or_dropped_connection_is_a_lost_connection(error):
    assert connection_lost(error)
    assert connection_lost(_handler_failed_from(error))


@pytest.mark.parametrize("error", [
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    psycopg.errors.UniqueViolation("duplicate key"),
    sqlite3.OperationalError("database is locked"),
    IntegrityError("not null"),
    ValueError("no such order"),
])
def test_a_failing_statement_or_handler_is_not(error):
    assert not connection_lost(error)
    assert not connection_lost(_handler_failed_from(error))
