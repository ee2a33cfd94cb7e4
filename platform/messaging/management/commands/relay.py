import logging

from django.core.management.base import BaseCommand

from messaging import tracing
from messaging.log_context import set_process_role
from messaging.management.commands._stop_signals import stop_requested
from messaging.relay import Relay

# Logged, not printed: a line of the relay's log like every other (JSON with BUS_LOG_FORMAT=json).
logger = logging.getLogger("messaging.relay")


class Command(BaseCommand):
    help = "Publish committed outbox rows to the broker until stopped (SIGTERM or Ctrl-C)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, help="rows per transaction")

    def handle(self, *args, **options):
        set_process_role("relay")
        stopping = stop_requested()
        tracing.configure("relay")
        logger.info("relay: publishing the outbox")
        Relay(batch_size=options["batch_size"]).run(stop=stopping)
        logger.info("relay: stopped")
