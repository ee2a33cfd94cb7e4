"""Which contracts exist, who owns them, and who handles them.

Filled as modules are imported: contracts register themselves when their
class is defined, handlers through the two decorators below. ``MessagingConfig``
imports every app's ``messages`` and ``handlers`` module (autodiscovery), so by
the time Django is ready the registry is complete. Mistakes are reported by
the system checks in ``messaging.checks``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.apps import apps

if TYPE_CHECKING:
    from messaging.contracts import Message

#: The module, inside a context app, that defines the contracts it owns.
MESSAGES_MODULE = "messages"
#: The module, inside a context app, that holds its handlers.
HANDLERS_MODULE = "handlers"


@functools.cache
def context_of_module(module_name: str) -> str | None:
    """The label of the installed app containing ``module_name``, if any.

    Cached: it is asked for every message handled, and installed apps do not
    change once Django is ready (before that it raises, and nothing is cached).
    """
    app_config = apps.get_containing_app_config(module_name)
    return app_config.label if app_config else None


@dataclasses.dataclass(frozen=True)
class Handler:
    """A command handler or event subscriber, as registered by its decorator."""

    func: Callable[[Message], object]
    #: "command" for ``@command_handler``, "event" for ``@event_subscriber``.
    kind: str
    #: What the decorator was given: a contract class or a dotted type name.
    target: type[Message] | str

    @property
    def message_type(self) -> str:
        return self.target if isinstance(self.target, str) else self.target.type_name()

    @property
    def context(self) -> str | None:
        return context_of_module(self.func.__module__)

    @property
    def name(self) -> str:
        """The consumer name: the inbox key, stable while the function keeps its name."""
        return f"{self.func.__module__}.{self.func.__qualname__}"


class Registry:
    def __init__(self) -> None:
        self.contracts: list[type[Message]] = []
        self.handlers: list[Handler] = []

    def register_contract(self, contract: type[Message]) -> None:
        self.contracts.append(contract)

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

    def problems(self) -> list[tuple[str, str]]:
        """Registry mistakes as (check id, message); empty when all is well."""
        found = []
        seen_types: dict[str, type[Message]] = {}
        for contract in self.contracts:
            owner = contract.context()
            expected_module = f"{apps.get_app_config(owner).name}.{MESSAGES_MODULE}" if owner else None
            if contract.__module__ != expected_module:
                found.append(("messaging.E001", (
                    f"{contract.__module__}.{contract.__name__} is a contract outside a context's "
                    f"'{MESSAGES_MODULE}' module; define it in <app>/{MESSAGES_MODULE}.py of the "
                    "context that owns it."
                )))
            type_name = contract.type_name()
            if type_name in seen_types and seen_types[type_name] is not contract:
                found.append(("messaging.E002", (
                    f"Two contracts are named '{type_name}': "
                    f"{seen_types[type_name].__module__} and {contract.__module__}."
                )))
            seen_types[type_name] = contract

        for handler in self.handlers:
            contract = self.contract_for(handler.message_type)
            if handler.context is None:
                found.append(("messaging.E007", (
                    f"Handler {handler.name} is not inside an installed app; "
                    "handlers live in a context's handlers module."
                )))
            if contract is None:
                found.append(("messaging.E004", (
                    f"Handler {handler.name} handles unknown message type "
                    f"'{handler.message_type}'."
                )))
                continue
            if contract.kind != handler.kind:
                decorator = "command_handler" if contract.kind == "command" else "event_subscriber"
                found.append(("messaging.E006", (
                    f"Handler {handler.name} treats the {contract.kind} '{handler.message_type}' "
                    f"as a {handler.kind}; use @{decorator}."
                )))
            elif contract.kind == "command" and handler.context != contract.context():
                found.append(("messaging.E005", (
                    f"Command '{handler.message_type}' is owned by context '{contract.context()}' "
                    f"but handled in '{handler.context}' ({handler.name}); "
                    "a command is handled by the context that owns it."
                )))

        for contract in self.contracts:
            if contract.kind != "command":
                continue
            command_handlers = self.handlers_for(contract.type_name())
            if len(command_handlers) > 1:
                names = ", ".join(h.name for h in command_handlers)
                found.append(("messaging.E003", (
                    f"Command '{contract.type_name()}' has {len(command_handlers)} handlers "
                    f"({names}); a command has exactly one receiver."
                )))
            elif not command_handlers:
                found.append(("messaging.W001", (
                    f"Command '{contract.type_name()}' has no handler: sending it would "
                    "leave it waiting in its queue."
                )))
        return found


#: The process-wide registry, filled by autodiscovery.
registry = Registry()


def command_handler(command: type[Message] | str) -> Callable:
    """Register the decorated function as the one handler of ``command``."""

    def decorate(func: Callable) -> Callable:
        registry.add_handler(Handler(func=func, kind="command", target=command))
        return func

    return decorate


def event_subscriber(event: type[Message] | str) -> Callable:
    """Register the decorated function as a subscriber of ``event`` for its context."""

    def decorate(func: Callable) -> Callable:
        registry.add_handler(Handler(func=func, kind="event", target=event))
        return func

    return decorate
