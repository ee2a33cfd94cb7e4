"""The message being handled right now, so the messages it causes can say so.

While a handler runs, every message it sends or publishes inherits the
handled message's ``correlationid`` and takes its ``id`` as ``causationid``.
"""

import contextlib
import contextvars
from collections.abc import Iterator

from messaging.contracts import Envelope

_handling: contextvars.ContextVar[tuple[Envelope, str] | None] = contextvars.ContextVar(
    "messaging_handling", default=None
)


def current() -> tuple[Envelope, str] | None:
    """The (envelope, consuming context) being handled, or None outside a handler."""
    return _handling.get()


@contextlib.contextmanager
def handling(envelope: Envelope, context: str) -> Iterator[None]:
    token = _handling.set((envelope, context))
    try:
        yield
    finally:
        _handling.reset(token)
