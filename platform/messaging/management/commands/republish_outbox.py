"""``manage.py republish_outbox --last 10s``: send again what the broker may have lost.

For a broker that lost messages it had confirmed: a Redis machine that lost
power with ``appendfsync everysec`` loses up to about a second of answered
writes (a killed ``redis-server`` loses none). The outbox still has those rows,
marked published (for ``BUS_OUTBOX_RETENTION``): this marks the rows published
since a time unpublished again, and the relay sends them once more. Consumers
that had a message already absorb the copy (inbox); order per aggregate holds,
since the relay sends the oldest rows first.
"""

import datetime

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime, parse_duration

from messaging.models import OutboxMessage
from messaging.outbox import nudge_relay


class Command(BaseCommand):
    help = ("Mark outbox rows published since a time unpublished again, so the relay sends them once more "
            "(after a broker lost messages it had confirmed; consumers absorb copies they had).")

    def add_arguments(self, parser):
        since = parser.add_mutually_exclusive_group(required=True)
        since.add_argument("--since", help="rows published at or after this time (ISO 8601, e.g. 2026-11-28T10:15:00Z)")
        since.add_argument("--last", help="rows published in this last stretch: seconds, '00:05:00' or 'PT5M'")
        parser.add_argument("--dry-run", action="store_true", help="count the rows, change nothing")

    def handle(self, *args, **options):
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

    def _since(self, options):
        if options["last"] is not None:
            stretch = parse_duration(options["last"])
            if stretch is None or stretch.total_seconds() <= 0:
                raise CommandError(f"--last {options['last']!r} is not a duration: use seconds, '00:05:00' or 'PT5M'")
            return timezone.now() - stretch
        since = parse_datetime(options["since"])
        if since is None:
            raise CommandError(f"--since {options['since']!r} is not a time: use ISO 8601, e.g. 2026-11-28T10:15:00Z")
        return since if timezone.is_aware(since) else since.replace(tzinfo=datetime.UTC)
