"""Telling a database that cannot be reached from a statement that failed.

A lost connection (PostgreSQL down, restarting, or the network between) says
nothing about the message being handled: the same work will succeed once the
database is back, so it must not cost the message an attempt. A failing
statement (a constraint, a deadlock, a timeout, bad SQL) carries a SQLSTATE of
its own and is an ordinary failure.
"""

import psycopg

#: SQLSTATEs meaning the session is gone rather than the statement refused: class 08
#: (connection exception), and the server shutting down, crashing or starting up.
_CONNECTION_LOST_STATES = ("08", "57P01", "57P02", "57P03")


def connection_lost(error: BaseException | None) -> bool:
    """True if ``error``, or an exception it was raised from, is a lost or refused connection."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, psycopg.InterfaceError):
            return True  # "the connection is closed"
        if isinstance(error, psycopg.OperationalError):
            # No SQLSTATE: the client itself failed to connect, or lost the server.
            return error.sqlstate is None or error.sqlstate.startswith(_CONNECTION_LOST_STATES)
        error = error.__cause__ or error.__context__
    return False


def close_if_broken(connection) -> None:
    """Drop ``connection``'s session if it no longer answers: the next query opens a new one
    (Django never replaces a broken session by itself outside a request)."""
    if connection.connection is not None and not connection.is_usable():
        connection.close()
