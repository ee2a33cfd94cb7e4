import signal

from django.core.management.base import BaseCommand

from messaging.relay import Relay


class Command(BaseCommand):
    help = "Publish committed outbox rows to the broker until stopped (SIGTERM or Ctrl-C)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, help="rows per transaction")

    def handle(self, *args, **options):
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
        self.stdout.write("relay: publishing the outbox")
        Relay(batch_size=options["batch_size"]).run(stop=lambda: bool(stopping))
        self.stdout.write("relay: stopped")
