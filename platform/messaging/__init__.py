"""The message bus: commands and events between bounded contexts.

Everything a context uses is here, in one place::

    from messaging import Command, Event                      # messages.py: its contracts
    from messaging import command_handler, event_subscriber   # handlers.py
    from messaging import Outbox, MessageRejectedError        # services.py: send and publish
    from messaging import ReadOnlyAdmin, ConversationLinkAdmin, short_id   # admin.py
    from messaging import RenameHandlers                      # a migration renaming handlers

and ``messaging.testing`` is the in-memory bus a context's tests run on.

The contracts and decorators are imported at once: ``messages`` and ``handlers``
modules are imported while Django loads the apps. The rest is imported on first
use (PEP 562), because it needs the models, which this package must not import
before the app registry is ready.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from messaging.contracts import Command, Event
from messaging.registry import command_handler, event_subscriber

#: What is imported on first use, and from where.
_LAZY = {
    "Outbox": "messaging.outbox",
    "MessageRejectedError": "messaging.outbox",
    "ReadOnlyAdmin": "messaging.admin_mixins",
    "ConversationLinkAdmin": "messaging.admin_mixins",
    "short_id": "messaging.admin_mixins",
    "RenameHandlers": "messaging.migration_operations",
}

__all__ = ("Command", "Event", "command_handler", "event_subscriber", *_LAZY)

if TYPE_CHECKING:
    from messaging.admin_mixins import ConversationLinkAdmin, ReadOnlyAdmin, short_id
    from messaging.migration_operations import RenameHandlers
    from messaging.outbox import MessageRejectedError, Outbox


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'messaging' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
