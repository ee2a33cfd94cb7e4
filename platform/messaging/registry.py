"""Which contracts exist, who owns them, and who handles them.

Filled when Django is ready, by ``MessagingConfig.ready``: it imports every
app's ``messages`` and ``handlers`` modules (autodiscovery), the handlers
registering themselves through the two decorators below, and then collects
the contracts, every ``Command`` and ``Event`` subclass defined in an
installed app (``collect_contracts``). Mistakes are reported by the system
checks in ``messaging.checks``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

from messaging.contexts import context_of_module
from messaging.contracts import Command, Event, Message

#: The module, inside a context app, that defines the contracts it owns.
MESSAGES_MODULE = "messages"
#: The module, inside a context app, that holds its handlers.
HANDLERS_MODULE = "handlers"


@dataclasses.dataclass(frozen=True)
class Handler:
    """A command handler or event subscriber, as registered by its decorator."""

    func: Callable[[Message], object]
    #: "command" for ``@command_handler``, "event" for ``@event_subscriber``.
    kind: str
    #: What the decorator was given: a contract class or a dotted type name.
    target: type[Message] | str
    #: What the decorator was given as ``name=``, if anything (see ``name``).
    given_name: str | None = None

    @property
    def message_type(self) -> str:
        return self.target if isinstance(self.target, str) else self.target.type_name()

    @property
    def context(self) -> str | None:
        return context_of_module(self.func.__module__)

    @property
    def name(self) -> str:
        """The consumer name: the inbox key and the consumer its dead letters name.

        ``<context>:<message type>``, or ``<context>:<name>`` when the decorator was
        given ``name=`` (a context with two subscribers of one event names them). It
        never depends on the function, so renaming or moving the function changes
        nothing stored; the context comes first, so a stored name says whose it is.
        """
        return f"{self.context}:{self.given_name or self.message_type}"

    @property
    def function(self) -> str:
        """The function's dotted path, for people reading logs and checks."""
        return f"{self.func.__module__}.{self.func.__qualname__}"


class Registry:
    def __init__(self, *, contracts: Iterable[type[Message]] = (), handlers: Iterable[Handler] = ()) -> None:
        self.contracts: list[type[Message]] = list(contracts)
        self.handlers: list[Handler] = list(handlers)

    def collect_contracts(self) -> None:
        """Take every contract defined in an installed app: once Django has loaded them all."""
        self.contracts = [contract for contract in _subclasses(Command, Event) if contract.context() is not None]

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    def contract_for(self, message_type: str) -> type[Message] | None:
        for contract in self.contracts:
            if contract.type_name() == message_type:
                return contract
        return None

    def handlers_for(self, message_type: str, context: str | None = None) -> list[Handler]:
        return [
            handler
            for handler in self.handlers
            if handler.message_type == message_type
            and (context is None or handler.context == context)
        ]

    def handled_types(self, context: str, kind: str) -> list[str]:
        """The message types of ``kind`` that ``context`` handles, sorted."""
        return sorted({h.message_type for h in self.handlers if h.context == context and h.kind == kind})

    def contexts(self) -> list[str]:
        """Every context that handles at least one message type."""
        return sorted({h.context for h in self.handlers if h.context})

    def contexts_known(self) -> set[str]:
        """Every bounded context: those that own contracts or handle messages."""
        return {c.context() for c in self.contracts} | set(self.contexts())


def _subclasses(*bases: type) -> Iterator[type]:
    """Every subclass of ``bases``, at any depth, in the order they were defined."""
    for base in bases:
        for subclass in base.__subclasses__():
            yield subclass
            yield from _subclasses(subclass)


#: The process-wide registry, filled by autodiscovery.
registry = Registry()


def command_handler(command: type[Message] | str, *, name: str | None = None) -> Callable:
    """Register the decorated function as the one handler of ``command``.

    ``name`` replaces the type in its consumer name (``Handler.name``), ``<context>:<type>``.
    """

    def decorate(func: Callable) -> Callable:
        registry.add_handler(Handler(func=func, kind="command", target=command, given_name=name))
        return func

    return decorate


def event_subscriber(event: type[Message] | str, *, name: str | None = None) -> Callable:
    """Register the decorated function as a subscriber of ``event`` for its context.

    ``name`` replaces the type in its consumer name (``Handler.name``), ``<context>:<type>``:
    needed only for a second subscriber of one event in one context.
    """

    def decorate(func: Callable) -> Callable:
        registry.add_handler(Handler(func=func, kind="event", target=event, given_name=name))
        return func

    return decorate
