"""What ``publish_event`` and ``send_command`` share: parse, validate, write.

Bad input and an unavailable database end in one line on stderr and a
non-zero exit (``CommandError``), never a traceback, and nothing is written.
"""

import json
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, OperationalError, connection, transaction

from messaging import outbox


class MessageCommand(BaseCommand):
    #: "event" or "command".
    kind: str

    def add_arguments(self, parser):
        parser.add_argument("type", help=f"the {self.kind} type, e.g. catalog.ProductPriceChanged")
        parser.add_argument("--data", required=True, help="the message data as a JSON object")
        parser.add_argument("--correlation-id", type=uuid.UUID, help="the business conversation (UUID)")

    def handle(self, *args, **options):
        data = _json_object(options["data"])
        write = outbox.publish if self.kind == "event" else outbox.send
        try:
            message = outbox.build(options["type"], data, kind=self.kind)
            with transaction.atomic():
                envelope = write(message, correlation_id=options["correlation_id"])
        except outbox.MessageRejectedError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(_database_failure(exc)) from exc
        self.stdout.write(str(envelope.id))


def _json_object(text: str) -> dict:
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise CommandError("--data is nested too deeply to read") from exc
    except ValueError as exc:  # not JSON, or a number too long to read
        raise CommandError(f"--data is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CommandError("--data must be a JSON object")
    return data


def _database_failure(exc: DatabaseError) -> str:
    """One line naming the database (never its password) and what went wrong."""
    params = connection.settings_dict
    where = str(params["NAME"])
    if params.get("HOST"):
        where += f" on {params['HOST']}:{params.get('PORT') or 'default port'}"
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if params.get("PASSWORD"):
        reason = reason.replace(params["PASSWORD"], "***")
    if isinstance(exc, OperationalError):  # down, unreachable, locked, not migrated (SQLite)
        return f"cannot use the database {where}: {reason}; nothing was written"
    return f"the database {where} refused the message: {reason}; nothing was written"
