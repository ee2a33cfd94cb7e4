from django.core.management.base import BaseCommand

from messaging import tracing
from messaging.management.commands._stop_signals import stop_requested
from messaging.relay import Relay


class Command(BaseCommand):
    help = "Publish committed outbox rows to the broker until stopped (SIGTERM or Ctrl-C)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, help="rows per transaction")

    def handle(self, *args, **options):
        stopping = stop_requested()
        tracing.configure("relay")
        self.stdout.write("relay: publishing the outbox")
        Relay(batch_size=options["batch_size"]).run(stop=stopping)
        self.stdout.write("relay: stopped")
