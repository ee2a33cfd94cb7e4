"""The message bus: commands and events between bounded contexts.

Contexts declare their contracts in ``messages.py`` (``Command``/``Event``
subclasses), handle them in ``handlers.py`` (``@command_handler`` and
``@event_subscriber``), and send them from services with
``messaging.outbox.send`` / ``messaging.outbox.publish``.
"""

from messaging.contracts import Command, Event
from messaging.registry import command_handler, event_subscriber

__all__ = ("Command", "Event", "command_handler", "event_subscriber")
