"""What ``publish_event`` and ``send_command`` share: read, validate, write, say in whose name.

Bad input and an unavailable database end in one line on stderr and a
non-zero exit (``CommandError``), never a traceback, and nothing is written.
Standard output carries only the message id, for scripts; what was sent, in
whose name and to whom goes to standard error, for the person at the terminal.
"""

import json
import sys
import uuid
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, OperationalError, connection, transaction

from messaging import outbox, tracing
from messaging.contracts import Envelope, Message
from messaging.registry import registry


class MessageCommand(BaseCommand):
    #: "event" or "command".
    kind: str
    #: A type of that kind, for the help text.
    example: str
    #: ``call_command(..., stdin=...)`` reads ``--data -`` from there (tests), as createsuperuser does.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("type", help=f"the {self.kind} type, e.g. {self.example}")
        parser.add_argument(
            "--data", required=True, metavar="JSON|@FILE|-",
            help="the message data: a JSON object, @FILE to read it from a file, or - to read it from standard input",
        )
        parser.add_argument("--correlation-id", type=uuid.UUID,
                            help="the business conversation to join (UUID; a checkout's is its order id)")

    def handle(self, *args, **options):
        # While tracing, the conversation this message starts (or joins) has its first span here.
        tracing.configure("command")
        data = _json_object(*_read_data(options["data"], options.get("stdin") or sys.stdin))
        try:
            message = outbox.build(options["type"], data, kind=self.kind)
            self.confirm_sender(type(message), options)
            with transaction.atomic():
                envelope = self.write(message, correlation_id=options["correlation_id"])
        except outbox.MessageRejectedError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(_database_failure(exc)) from exc
        self.stderr.write(self.describe(envelope), style_func=self.style.WARNING)
        self.stdout.write(str(envelope.id))

    def confirm_sender(self, contract: type[Message], options: dict) -> None:
        """Raise ``CommandError`` unless the sender is entitled to send ``contract`` from here."""

    def write(self, message: Message, *, correlation_id: uuid.UUID | None) -> Envelope:
        raise NotImplementedError

    def describe(self, envelope: Envelope) -> str:
        """One line for the person who sent it: what, in whose name, to whom."""
        raise NotImplementedError


def receivers(message_type: str) -> str:
    """The contexts a message reaches, as words."""
    contexts = sorted({handler.context for handler in registry.handlers_for(message_type)})
    return ", ".join(contexts) or "no context (nothing handles it)"


def _read_data(value: str, stdin) -> tuple[str, str]:
    """(the JSON text, how to name where it came from in an error)."""
    if value == "-":
        try:
            return stdin.read(), "--data - (standard input)"
        except UnicodeDecodeError as exc:
            raise CommandError("--data - (standard input) is not UTF-8 text") from exc
    if not value.startswith("@"):
        return value, "--data"
    path = value[1:]
    if not path:
        raise CommandError("--data @ needs a file name, e.g. --data @price.json")
    try:
        return Path(path).read_text(encoding="utf-8"), f"--data {value}"
    except UnicodeDecodeError as exc:
        raise CommandError(f"--data {value}: {path} is not UTF-8 text") from exc
    except OSError as exc:
        raise CommandError(f"--data {value}: cannot read {path}: {exc.strerror or exc}") from exc


def _json_object(text: str, where: str) -> dict:
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise CommandError(f"{where} is nested too deeply to read") from exc
    except ValueError as exc:  # not JSON, or a number too long to read
        raise CommandError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CommandError(f"{where} must be a JSON object")
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
