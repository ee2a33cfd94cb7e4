"""``manage.py republish_outbox --last 10s``: send again what the broker may have lost.

For a broker that lost messages it had confirmed: a Redis machine that lost
power with ``appendfsync everysec`` loses up to about a second of answered
writes (a killed ``redis-server`` loses none). The outbox still has those rows,
marked published (for ``BUS_OUTBOX_RETENTION``): this marks the rows published
since a time unpublished again, and the relay sends them once more. Consumers
that had a message already absorb the copy (inbox); order per aggregate holds,
since the relay sends the oldest rows first.

``--to <context> --type <event type>`` catches up a subscriber that joined late
instead (``messaging.catch_up``): the events of that type published since the
time are sent again to that context's queue only, oldest first, at ``--rate``
per second, with a progress bar; the other subscribers see nothing. Stopped
(Ctrl-C, SIGTERM), it finishes the chunk it wrote; run again with the same
arguments, it goes on after the last event sent.
"""

import datetime
import math

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime, parse_duration

from messaging.catch_up import DEFAULT_RATE, CatchUp, CatchUpError
from messaging.management.commands._progress import Progress
from messaging.management.commands._stop_signals import stop_signals_caught
from messaging.models import OutboxMessage
from messaging.outbox import nudge_relay


class Command(BaseCommand):
    help = ("Mark outbox rows published since a time unpublished again, so the relay sends them once more "
            "(after a broker lost messages it had confirmed; consumers absorb copies they had); or, with "
            "--to and --type, send the events of one type published since a time to one subscriber only "
            "(a new subscriber catches up).")

    def add_arguments(self, parser):
        since = parser.add_mutually_exclusive_group(required=True)
        since.add_argument("--since", help="rows published at or after this time (ISO 8601, e.g. 2026-11-28T10:15:00Z)")
        since.add_argument("--last", help="rows published in this last stretch: seconds, '00:05:00' or 'PT5M'")
        parser.add_argument("--dry-run", action="store_true", help="count the rows, change nothing")
        catch_up = parser.add_argument_group("a new subscriber catches up (--to and --type together)")
        catch_up.add_argument("--to", metavar="CONTEXT",
                              help="send only to this context's queue (it must subscribe to --type)")
        catch_up.add_argument("--type", metavar="EVENT_TYPE", help="the event type to send, e.g. catalog.ProductPriceChanged")
        catch_up.add_argument("--rate", type=float, metavar="N",
                              help=f"events per second at most (default {DEFAULT_RATE:g}), leaving room for live traffic")

    def handle(self, *args, **options):
        if options["to"] is not None or options["type"] is not None:
            return self._catch_up(options)
        if options["rate"] is not None:
            raise CommandError("--rate paces a catch-up: give it with --to and --type")
        since = self._since(options)
        rows = OutboxMessage.objects.filter(published_at__gte=since)
        if options["dry_run"]:
            self.stdout.write(f"would send again {rows.count()} rows published since {since.isoformat()}")
            return
        with transaction.atomic():
            count = rows.update(published_at=None)
            nudge_relay()
        self.stdout.write(f"marked {count} rows published since {since.isoformat()} to be sent again: "
                          "the relay publishes them, and consumers absorb the copies they already had")

    def _catch_up(self, options):
        if options["to"] is None or options["type"] is None:
            raise CommandError("--to and --type go together: the context to catch up, and the event type it missed")
        rate = DEFAULT_RATE if options["rate"] is None else options["rate"]
        if not (rate > 0 and math.isfinite(rate)):
            raise CommandError(f"--rate {options['rate']:g} is not a rate: give events per second above 0")
        try:
            # One clock reading for both: --last equal to the retention is the whole history kept.
            now = timezone.now()
            catch_up = CatchUp.plan(context=options["to"], event_type=options["type"],
                                    since=self._since(options, now=now), now=now)
        except CatchUpError as exc:
            raise CommandError(str(exc)) from exc
        what = f"{catch_up.event_type} published since {catch_up.since.isoformat()}"
        pending, kept = catch_up.pending().count(), catch_up.history().count()
        earlier = f" ({kept - pending} of {kept} sent to it before)" if kept > pending else ""
        if options["dry_run"]:
            self.stdout.write(f"would send {pending} {what} to {catch_up.context} only{earlier}")
            return
        if not pending:
            self.stdout.write(f"nothing to send: {kept} {what}, all sent to {catch_up.context} before" if kept
                              else f"nothing to send: no {what} is in the outbox")
            return
        self.stdout.write(f"sending {pending} {what} to {catch_up.context} only{earlier}, {rate:g} per second at most")
        progress = Progress(self.stdout, total=pending, label=f"{catch_up.context} catching up")
        with stop_signals_caught() as stopping:
            try:
                sent = catch_up.run(rate=rate, stop=stopping, progress=progress.update,
                                    notice=lambda text: self.stderr.write(f"\n{text}"))
            finally:
                progress.close()
            stopped = stopping()
        if stopped and sent < pending:
            self.stdout.write(
                f"stopped: {sent} of {pending} sent (events written for the relay already go out too). "
                "Run the same command again to send the rest: what was sent is not sent again"
            )
            return
        self.stdout.write(f"sent {sent} {what} to {catch_up.context} only: its inbox absorbs those it had")

    def _since(self, options, *, now=None):
        if options["last"] is not None:
            stretch = parse_duration(options["last"])
            if stretch is None or stretch.total_seconds() <= 0:
                raise CommandError(f"--last {options['last']!r} is not a duration: use seconds, '00:05:00' or 'PT5M'")
            return (now or timezone.now()) - stretch
        since = parse_datetime(options["since"])
        if since is None:
            raise CommandError(f"--since {options['since']!r} is not a time: use ISO 8601, e.g. 2026-11-28T10:15:00Z")
        return since if timezone.is_aware(since) else since.replace(tzinfo=datetime.UTC)
