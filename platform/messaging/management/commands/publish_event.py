"""``publish_event``: announce a fact in the name of the context that owns it, on purpose only.

An event says what its owning context did; every subscriber acts on it as that
context's word, and nothing checks it against the owner's own data. So this
command publishes only with ``--as-context <owner>``, the operator confirming in
whose name they speak, and says so again once published.
"""

from django.core.management.base import CommandError

from messaging.management.commands._message_command import MessageCommand, receivers
from messaging.outbox import Outbox


class Command(MessageCommand):
    help = (
        "Validate an event and write it to the outbox in the name of the context that owns it; prints the "
        "message id. Needs --as-context <owner>: subscribers take it as that context's fact, while the "
        "owner's own data does not change."
    )
    kind = "event"
    example = "catalog.ProductPriceChanged"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--as-context", metavar="CONTEXT",
            help="required: the context that owns the event (catalog for catalog.ProductPriceChanged), "
                 "confirming that you publish in its name",
        )

    def confirm_sender(self, contract, options):
        owner, confirmed = contract.context(), options["as_context"]
        if confirmed is None:
            raise CommandError(
                f"{contract.type_name()} is a fact of {owner}: published from here, its subscribers "
                f"({receivers(contract.type_name())}) act on it as {owner}'s word while {owner}'s own data stays "
                f"as it is. Change {owner}'s state through its admin or services; to re-announce a fact that is "
                f"true, add --as-context {owner}"
            )
        if confirmed != owner:
            raise CommandError(
                f"--as-context {confirmed} does not match: {contract.type_name()} is a fact of {owner}, "
                f"published only in its name (--as-context {owner})"
            )

    def write(self, message, *, correlation_id):
        # In the owner's name, as --as-context confirmed (confirm_sender).
        return Outbox.for_context(type(message).context()).publish(message, correlation_id=correlation_id)

    def describe(self, envelope):
        return (
            f"PUBLISHED IN THE NAME OF {envelope.source}: {envelope.type} (source {envelope.source!r}) to "
            f"{receivers(envelope.type)}; {envelope.source}'s own data did not change; "
            f"conversation {envelope.correlationid}"
        )
