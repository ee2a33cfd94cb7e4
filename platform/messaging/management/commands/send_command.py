"""``send_command``: ask the owning context to do something, as the operator."""

from messaging.management.commands._message_command import MessageCommand, receivers
from messaging.outbox import Outbox


class Command(MessageCommand):
    help = (
        "Validate a command and write it to the outbox, sent by the operator (source 'operator'), "
        "for the context that owns it; prints the message id."
    )
    kind = "command"
    example = "ordering.ExpireOrder"

    def write(self, message, *, correlation_id):
        # From a management command the source is always the operator: no context sends it.
        return Outbox.operator().send(message, correlation_id=correlation_id)

    def describe(self, envelope):
        return (
            f"sent {envelope.type} to {receivers(envelope.type)} in the name of {envelope.source!r} "
            f"(a command from the command line); conversation {envelope.correlationid}"
        )
