"""The registry and its system checks: mistakes fail `manage.py check`."""

import pytest
from django.apps import apps
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from apps.catalog.messages import ProductPriceChanged, ReserveStock
from messaging.checks import registry_problems
from messaging.registry import Handler, Registry, registry


def _registry_with(*handlers: Handler) -> Registry:
    return Registry(contracts=registry.contracts, handlers=[*registry.handlers, *handlers])


def _check_ids(reg: Registry) -> set[str]:
    return {problem.id for problem in registry_problems(reg)}


def _problems_by_id(reg: Registry) -> dict[str, str]:
    return {problem.id: problem.msg for problem in registry_problems(reg)}


def reserve_again(command):
    """A second handler for a command, defined outside any context."""


def on_product_price_changed(event):
    """A subscriber named by the pattern, defined outside any context."""


def test_the_project_registry_has_no_problems():
    assert registry_problems(registry) == []
    call_command("check")


def _installed_contexts() -> set[str]:
    """Every bounded context installed: the Django apps under ``apps.``, however many a project adds."""
    return {app_config.label for app_config in apps.get_app_configs() if app_config.name.startswith("apps.")}


def test_every_context_the_registry_finds_is_an_installed_app():
    assert registry.contexts_known() <= _installed_contexts()
    assert set(registry.contexts()) <= _installed_contexts()


def test_every_context_handles_what_the_flows_need():
    # The flows' own contexts are among them; a project's added context is not a mistake.
    assert {"basket", "catalog", "ordering", "payment"} <= set(registry.contexts())
    assert {h.context for h in registry.handlers_for("catalog.ProductPriceChanged")} == {"basket", "ordering"}
    assert [h.function for h in registry.handlers_for("ordering.PlaceOrder")] == ["apps.ordering.handlers.place_order"]


def test_two_handlers_for_one_command_is_an_error():
    second = Handler(func=reserve_again, kind="command", target=ReserveStock)
    [problem] = [p for p in registry_problems(_registry_with(second)) if p.id == "messaging.E003"]

    assert "has 2 handlers" in problem.msg
    assert "exactly one receiver" in problem.hint


def test_a_subscriber_to_an_unknown_type_is_an_error():
    ghost = Handler(func=reserve_again, kind="event", target="catalog.ProductDeleted")
    problems = _problems_by_id(_registry_with(ghost))

    assert "unknown message type 'catalog.ProductDeleted'" in problems["messaging.E004"]


def test_subscribing_to_a_command_or_handling_an_event_as_a_command_is_an_error():
    assert "messaging.E006" in _check_ids(_registry_with(Handler(func=reserve_again, kind="event", target=ReserveStock)))
    assert "messaging.E006" in _check_ids(
        _registry_with(Handler(func=reserve_again, kind="command", target=ProductPriceChanged))
    )


def test_a_command_handled_outside_its_owning_context_is_an_error():
    from apps.basket import handlers as basket_handlers

    foreign = Handler(func=basket_handlers.on_product_price_changed, kind="command", target=ReserveStock)
    problems = registry_problems(_registry_with(foreign))

    assert any(p.id == "messaging.E005" and "owned by context 'catalog'" in p.msg and "move the handler to 'catalog'"
               in p.hint for p in problems)


def test_a_handler_outside_any_context_is_an_error():
    assert "messaging.E007" in _check_ids(_registry_with(Handler(func=reserve_again, kind="event", target=ProductPriceChanged)))


def test_manage_py_check_fails_with_a_clear_message(monkeypatch):
    second = Handler(func=reserve_again, kind="command", target=ReserveStock)
    monkeypatch.setattr(registry, "handlers", [*registry.handlers, second])

    with pytest.raises(SystemCheckError, match="A command has exactly one receiver"):
        call_command("check")


def test_a_contract_is_only_a_class_until_the_registry_collects_the_installed_apps():
    from messaging.contracts import Event

    class StockCounted(Event):
        __module__ = "apps.catalog.messages"  # as if defined in the catalog's messages module

    class Stray(Event):
        """Defined here, in no installed app: no context owns it."""

    assert StockCounted not in registry.contracts

    collected = Registry()
    collected.collect_contracts()

    assert StockCounted in collected.contracts
    assert Stray not in collected.contracts
    assert set(registry.contracts) < set(collected.contracts)


def test_a_subscriber_not_named_on_its_event_is_warned_with_the_name_to_take():
    misnamed = Handler(func=reserve_again, kind="event", target=ProductPriceChanged)
    [warning] = [p for p in registry_problems(_registry_with(misnamed)) if p.id == "messaging.W002"]

    assert isinstance(warning, checks.Warning)
    assert warning.obj == "tests.unit.test_registry.reserve_again"
    assert "is not named 'on_product_price_changed'" in warning.msg
    assert "Rename it to 'on_product_price_changed'" in warning.hint
    assert "A style rule only: the inbox key is 'None:catalog.ProductPriceChanged'" in warning.hint  # no app here


def test_a_command_handler_is_expected_to_be_named_after_its_command():
    misnamed = Handler(func=on_product_price_changed, kind="command", target="catalog.ReserveStock")
    [warning] = [p for p in registry_problems(_registry_with(misnamed)) if p.id == "messaging.W002"]

    assert "Rename it to 'reserve_stock'" in warning.hint


def test_a_handler_named_by_the_pattern_is_not_warned():
    well_named = Handler(func=on_product_price_changed, kind="event", target="catalog.ProductPriceChanged")

    assert "messaging.W002" not in _check_ids(_registry_with(well_named))


def test_two_subscribers_of_one_event_in_one_context_need_names_of_their_own():
    [basket_subscriber] = registry.handlers_for("catalog.ProductPriceChanged", "basket")
    second = Handler(func=basket_subscriber.func, kind="event", target=ProductPriceChanged)
    named = Handler(func=basket_subscriber.func, kind="event", target=ProductPriceChanged, given_name="audit")

    [problem] = [p for p in registry_problems(_registry_with(second)) if p.id == "messaging.E008"]

    assert "share the consumer name 'basket:catalog.ProductPriceChanged'" in problem.msg
    assert "name=" in problem.hint
    assert named.name == "basket:audit"
    assert "messaging.E008" not in _check_ids(_registry_with(named))
