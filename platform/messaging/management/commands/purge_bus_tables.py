from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from messaging.retention import purge_bus_tables, purgeable

#: What makes a row of each table old, and the setting that says how old, for the report.
RETENTION = {"outbox": ("published", "BUS_OUTBOX_RETENTION"), "inbox": ("handled", "BUS_INBOX_RETENTION")}


class Command(BaseCommand):
    help = (
        "Delete published outbox rows and inbox rows past their retention, in batches "
        "(the relay does this periodically; dead letters are never purged)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
        parser.add_argument("--batch-size", type=int, help="rows per DELETE (default BUS_PURGE_BATCH_SIZE)")

    def handle(self, *args, **options):
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        if options["dry_run"]:
            counts, verb = {table: rows.count() for table, rows in purgeable().items()}, "would delete"
        else:
            counts, verb = purge_bus_tables(batch_size=options["batch_size"]), "deleted"
        for table, count in counts.items():
            event, setting = RETENTION[table]
            self.stdout.write(
                f"{table}: {verb} {count} rows {event} more than {getattr(settings, setting)} ago ({setting})"
            )
