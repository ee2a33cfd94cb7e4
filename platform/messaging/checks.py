"""System checks: ``manage.py check`` fails on a registry mistake, a retention that forgets too
soon, broker settings the broker cannot work with or a metrics folder it cannot write, and warns about a handler not named after what it handles.

Each ``_check_*`` function looks at one kind of mistake and returns Django
check messages with an id and a hint saying how to fix it, as
``django/contrib/admin/checks.py`` does. ``registry_problems`` runs them on any
registry (the tests give it a registry with a mistake in it).
"""

import tempfile
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.utils.text import camel_case_to_spaces

from messaging import brokers
from messaging.registry import MESSAGES_MODULE, Registry, registry
from messaging.retention import longest_redelivery


@checks.register("messaging")
def check_message_registry(app_configs, **kwargs):
    return registry_problems(registry)


def registry_problems(checked: Registry) -> list[checks.CheckMessage]:
    """Every mistake in ``checked``: contracts, handlers, and who receives each command."""
    return [
        *_check_contracts(checked),
        *_check_handlers(checked),
        *_check_handler_names(checked),
        *_check_command_receivers(checked),
    ]


def _check_contracts(checked: Registry) -> list[checks.CheckMessage]:
    found, seen_types = [], {}
    for contract in checked.contracts:
        owner = contract.context()
        expected_module = f"{apps.get_app_config(owner).name}.{MESSAGES_MODULE}" if owner else None
        if contract.__module__ != expected_module:
            found.append(checks.Error(
                f"{contract.__module__}.{contract.__name__} is a contract outside a context's "
                f"'{MESSAGES_MODULE}' module.",
                hint=f"Define it in <app>/{MESSAGES_MODULE}.py of the context that owns it.",
                obj=_dotted(contract), id="messaging.E001",
            ))
        type_name = contract.type_name()
        if type_name in seen_types and seen_types[type_name] is not contract:
            found.append(checks.Error(
                f"Two contracts are named '{type_name}': {seen_types[type_name].__module__} and {contract.__module__}.",
                hint="A type name is <context>.<ClassName>: rename one of the classes.",
                obj=_dotted(contract), id="messaging.E002",
            ))
        seen_types[type_name] = contract
    return found


def _check_handlers(checked: Registry) -> list[checks.CheckMessage]:
    found = []
    for handler in checked.handlers:
        contract = checked.contract_for(handler.message_type)
        if handler.context is None:
            found.append(checks.Error(
                f"Handler {handler.function} is not inside an installed app.",
                hint="Move it into the handlers module of the context that reacts (<app>/handlers.py).",
                obj=handler.function, id="messaging.E007",
            ))
        if contract is None:
            found.append(checks.Error(
                f"Handler {handler.function} handles unknown message type '{handler.message_type}'.",
                hint="Name a contract defined in some context's messages module (<context>.<ClassName>).",
                obj=handler.function, id="messaging.E004",
            ))
            continue
        if contract.kind != handler.kind:
            decorator = "command_handler" if contract.kind == "command" else "event_subscriber"
            found.append(checks.Error(
                f"Handler {handler.function} treats the {contract.kind} '{handler.message_type}' as a {handler.kind}.",
                hint=f"Decorate it with @{decorator}.",
                obj=handler.function, id="messaging.E006",
            ))
        elif contract.kind == "command" and handler.context != contract.context():
            found.append(checks.Error(
                f"Command '{handler.message_type}' is owned by context '{contract.context()}' "
                f"but handled in '{handler.context}' ({handler.function}).",
                hint=f"A command is handled by the context that owns it: move the handler to "
                     f"'{contract.context()}', or make the message an event '{handler.context}' subscribes to.",
                obj=handler.function, id="messaging.E005",
            ))
    return found + _check_consumer_names(checked)


def _check_consumer_names(checked: Registry) -> list[checks.CheckMessage]:
    # The consumer name is the inbox key: two handlers sharing one would each
    # take the other's inbox rows for "already handled".
    by_name: dict[str, list] = {}
    for handler in checked.handlers:
        by_name.setdefault(handler.name, []).append(handler)
    return [
        checks.Error(
            f"Handlers {', '.join(h.function for h in handlers)} share the consumer name '{name}'.",
            hint="Give each subscriber of one event in one context its own name: "
                 "@event_subscriber(Event, name='<what it does>').",
            obj=handlers[1].function, id="messaging.E008",
        )
        for name, handlers in by_name.items() if len(handlers) > 1
    ]


def _check_handler_names(checked: Registry) -> list[checks.CheckMessage]:
    # One pattern everywhere, so a reader knows the message from the function's name.
    found = []
    for handler in checked.handlers:
        contract = checked.contract_for(handler.message_type)
        if contract is None or contract.kind != handler.kind:
            continue  # E004 or E006 says so; the expected name depends on what it handles
        expected = _expected_handler_name(contract)
        if handler.func.__qualname__ != expected:
            found.append(checks.Warning(
                f"Handler {handler.function} of {contract.kind} '{handler.message_type}' is not named '{expected}'.",
                hint=f"Rename it to '{expected}' (a command handler is named after its command, an event "
                     "subscriber on_<event>, in snake_case). A style rule only: the inbox key is "
                     f"'{handler.name}', whatever the function's name.",
                obj=handler.function, id="messaging.W002",
            ))
    return found


def _expected_handler_name(contract) -> str:
    """``place_order`` handles ``PlaceOrder``; ``on_stock_reserved`` subscribes to ``StockReserved``."""
    snake_case = camel_case_to_spaces(contract.__name__).replace(" ", "_")
    return snake_case if contract.kind == "command" else f"on_{snake_case}"


def _check_command_receivers(checked: Registry) -> list[checks.CheckMessage]:
    found = []
    for contract in checked.contracts:
        if contract.kind != "command":
            continue
        receivers = checked.handlers_for(contract.type_name())
        if len(receivers) > 1:
            found.append(checks.Error(
                f"Command '{contract.type_name()}' has {len(receivers)} handlers "
                f"({', '.join(h.name for h in receivers)}).",
                hint="A command has exactly one receiver: keep one handler, or publish an event instead.",
                obj=_dotted(contract), id="messaging.E003",
            ))
        elif not receivers:
            found.append(checks.Warning(
                f"Command '{contract.type_name()}' has no handler: sending it would leave it waiting in its queue.",
                hint=f"Add a @command_handler({contract.__name__}) in the '{contract.context()}' context, "
                     "or remove the contract.",
                obj=_dotted(contract), id="messaging.W001",
            ))
    return found


@checks.register("messaging")
def check_inbox_outlasts_redelivery(app_configs, **kwargs):
    # An inbox row purged while its message can still come back lets the
    # message change things a second time.
    longest = longest_redelivery()
    if settings.BUS_INBOX_RETENTION >= longest:
        return []
    return [checks.Error(
        f"BUS_INBOX_RETENTION ({settings.BUS_INBOX_RETENTION}) is shorter than the longest redelivery "
        f"({longest}): a message coming back after its inbox row was purged would be handled again.",
        hint="Raise BUS_INBOX_RETENTION, or lower BUS_DEAD_LETTER_REPLAY_WINDOW, BUS_MAX_RETRIES, "
             "BUS_RETRY_BACKOFF_MAX, BUS_DELIVERY_LIMIT or CELERY_TASK_TIME_LIMIT "
             "(messaging.retention.longest_redelivery adds them up).",
        id="messaging.E010",
    )]


@checks.register("messaging")
def check_broker(app_configs, **kwargs):
    """What the broker's adapter cannot work with (on Redis, a visibility timeout too short)."""
    return brokers.current().configuration_problems()


@checks.register("messaging")
def check_metrics_folder(app_configs, **kwargs):
    """A metrics folder this process cannot write to: refused at start, where a worker
    exits on it (``python -m workers``), rather than every count failing later."""
    folder = settings.BUS_METRICS_DIR
    if not folder:
        return []
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return [checks.Error(f"BUS_METRICS_DIR ({folder}) cannot be written: {exc}",
                             hint="Point BUS_METRICS_DIR at a folder of this host this process may write "
                                  "to, or leave it empty to record no metrics.",
                             id="messaging.E012")]
    return []


def _dotted(contract) -> str:
    # What `manage.py check` prints before the message: a path, not a class repr.
    return f"{contract.__module__}.{contract.__name__}"
