"""``manage.py dead_letters list|retry|discard|reopen``: the admin's dead-letter actions from a shell.

The same service as the admin's (``messaging.repair``); each act is recorded
in the dead letter's history under ``cli:<user>@<host>`` (or ``--actor``).
Filters narrow the rows acted on; ``--dry-run`` shows what would happen.
Bad input ends in one line on stderr and a non-zero exit.
"""

import getpass
import socket
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime, parse_duration

from messaging import repair
from messaging.models import DeadLetter

#: Most rows ``list`` prints unless told otherwise.
DEFAULT_LIST_LIMIT = 50


class Command(BaseCommand):
    help = "List, retry, discard or reopen dead letters (the admin's actions, from a shell)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="list|retry|discard|reopen")
        for name, text in (
            ("list", "show dead letters, newest first (open ones unless --status says otherwise)"),
            ("retry", "send open dead letters back to the consumer that failed"),
            ("discard", "archive open dead letters with a note; nothing is sent"),
            ("reopen", "make discarded dead letters open again, with a note; nothing is sent"),
        ):
            action = actions.add_parser(name, help=text, description=text)
            action.add_argument("--id", dest="ids", action="append", default=[], metavar="UUID",
                                help="a dead letter's id or its message's id (repeatable)")
            action.add_argument("--type", help="message type, e.g. ordering.PlaceOrder")
            action.add_argument("--context", help="the context whose consumer gave up")
            action.add_argument("--reason", choices=DeadLetter.Reason.values, help="why it was dead-lettered")
            action.add_argument("--exception", help="the exception's class, e.g. KeyError")
            action.add_argument("--since", help="dead-lettered since: an ISO time or a duration ago ('2 days', "
                                                "'01:30:00', 'PT15M')")
            action.add_argument("--actor", help="who acts, for the history (default cli:<user>@<host>)")
            if name == "list":
                action.add_argument("--status", choices=[*DeadLetter.Status.values, "all"], default="open")
                action.add_argument("--limit", type=int, default=DEFAULT_LIST_LIMIT)
            else:
                action.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
            if name == "discard":
                action.add_argument("--note", required=True, help="why these need no repair (kept in the history)")
            if name == "reopen":
                action.add_argument("--note", required=True, help="why they need repair after all (kept in the history)")

    def handle(self, *args, **options):
        rows = self._selected(options)
        if options["action"] == "list":
            return self._list(rows, options)
        if not rows.exists():
            raise CommandError("no dead letter matches these filters")
        actor = options["actor"] or f"cli:{getpass.getuser()}@{socket.gethostname()}"
        if options["action"] == "retry":
            report = repair.retry(rows, actor=actor, dry_run=options["dry_run"])
            verb = "would retry" if options["dry_run"] else "retried"
        elif options["action"] == "discard":
            report = repair.discard(rows, actor=actor, note=options["note"], dry_run=options["dry_run"])
            verb = "would discard" if options["dry_run"] else "discarded"
        else:
            report = repair.reopen(rows, actor=actor, note=options["note"], dry_run=options["dry_run"])
            verb = "would reopen" if options["dry_run"] else "reopened"
        for dead_letter in report.done:
            self.stdout.write(f"{verb} {_line(dead_letter)}")
        for dead_letter, why in report.refused:
            self.stderr.write(f"refused {_line(dead_letter)}: {why}")
        self.stdout.write(f"{verb} {len(report.done)}, refused {len(report.refused)}")
        if report.refused and not report.done:
            raise CommandError("nothing was done")

    def _selected(self, options):
        rows = DeadLetter.objects.all()
        # Acts take the dead letters they act on (reopen the discarded ones, the others open ones);
        # named by id, any, so one in another status is refused with why.
        acted_on = DeadLetter.Status.DISCARDED if options["action"] == "reopen" else DeadLetter.Status.OPEN
        status = options.get("status", "all" if options["ids"] else acted_on)
        if status != "all":
            rows = rows.filter(status=status)
        if options["ids"]:
            ids = [_uuid(value) for value in options["ids"]]
            rows = rows.filter(Q(pk__in=ids) | Q(message_id__in=ids))
        for option, field in (("type", "message_type"), ("context", "context"), ("reason", "reason"),
                              ("exception", "exception_type")):
            if options[option]:
                rows = rows.filter(**{field: options[option]})
        if options["since"]:
            rows = rows.filter(created_at__gte=_since(options["since"]))
        return rows.order_by("-created_at")

    def _list(self, rows, options):
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        total = rows.count()
        for dead_letter in rows[: options["limit"]]:
            self.stdout.write(f"{_line(dead_letter)}  [{dead_letter.status}]  {(dead_letter.error.splitlines() or [''])[0][:120]}")
        shown = min(total, options["limit"])
        self.stdout.write(f"{shown} of {total} dead letters" + (" (--limit shows more)" if total > shown else ""))


def _line(dead_letter: DeadLetter) -> str:
    return (f"{dead_letter.id}  {dead_letter.created_at:%Y-%m-%d %H:%M:%S}  "
            f"{dead_letter.message_type or '(unreadable)'} -> {dead_letter.context}  {dead_letter.reason}")


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"--id {value!r} is not a UUID") from None


def _since(value: str):
    moment = parse_datetime(value)
    if moment is not None:
        return moment if timezone.is_aware(moment) else timezone.make_aware(moment)
    duration = parse_duration(value)
    if duration is None:
        raise CommandError(f"--since {value!r} is neither an ISO time nor a duration ('2 days', '01:30:00', 'PT15M')")
    return timezone.now() - duration
