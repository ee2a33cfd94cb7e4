"""Writing messages from a test as the platform's own senders would.

An event is published in the name of the context that owns it, as that
context's services do; a command is sent by the operator, as from a shell
or ``send_command``. Tests of the outbox's sender rules use
``messaging.outbox.Outbox`` itself.
"""

from messaging.outbox import Outbox


def publish(event, **options):
    return Outbox.for_context(type(event).context()).publish(event, **options)


def publish_many(events, **options):
    return Outbox.for_context(type(events[0]).context()).publish_many(events, **options)


def send(command, **options):
    return Outbox.operator().send(command, **options)
