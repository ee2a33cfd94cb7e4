from messaging.management.commands._message_command import MessageCommand


class Command(MessageCommand):
    help = "Validate a command and write it to the outbox; prints the message id."
    kind = "command"
