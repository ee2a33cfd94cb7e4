"""The message bus: commands and events between bounded contexts.

Contexts declare their contracts in ``messages.py`` (``Command``/``Event``
subclasses), handle them in ``handlers.py`` (``@command_handler`` and
``@event_subscriber``), and send them from services through their context's outbox
(``outbox = messaging.outbox.Outbox.for_module(__name__)``, then
``outbox.send`` / ``outbox.publish``). The outbox is not importable from
here: it needs the models, and this package is imported while Django loads
the apps.
"""

from messaging.contracts import Command, Event
from messaging.registry import command_handler, event_subscriber

__all__ = ("Command", "Event", "command_handler", "event_subscriber")
