"""What ``publish_event`` and ``send_command`` share: parse, validate, write."""

import json
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from messaging import outbox


class MessageCommand(BaseCommand):
    #: "event" or "command".
    kind: str

    def add_arguments(self, parser):
        parser.add_argument("type", help=f"the {self.kind} type, e.g. catalog.ProductPriceChanged")
        parser.add_argument("--data", required=True, help="the message data as a JSON object")
        parser.add_argument("--correlation-id", type=uuid.UUID, help="the business conversation (UUID)")

    def handle(self, *args, **options):
        try:
            data = json.loads(options["data"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--data is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CommandError("--data must be a JSON object")
        write = outbox.publish if self.kind == "event" else outbox.send
        try:
            message = outbox.build(options["type"], data, kind=self.kind)
            with transaction.atomic():
                envelope = write(message, correlation_id=options["correlation_id"])
        except outbox.MessageRejectedError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(str(envelope.id))
