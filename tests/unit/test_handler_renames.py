"""Renaming a handler keeps what it handled: consumer names no longer follow functions, and the
migrations that moved stored names (the contexts' ``RenameHandlers``, the bus's own move to
``<context>:<type>``) keep every handled message handled."""

import dataclasses
import uuid

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from messaging.migration_operations import RenameHandlers
from messaging.models import DeadLetter, InboxMessage
from messaging.registry import registry

OLD = "apps.basket.handlers.reprice_baskets"
NEW = "apps.basket.handlers.on_product_price_changed"
OTHER = "apps.ordering.handlers.on_product_price_changed"
#: What NEW's handler is named in the inbox since names are stable.
STABLE = "basket:catalog.ProductPriceChanged"


def _handled(consumer: str, message_id: uuid.UUID | None = None) -> InboxMessage:
    return InboxMessage.objects.create(message_id=message_id or uuid.uuid4(), consumer=consumer,
                                       message_type="catalog.ProductPriceChanged")


def _renames_in_migrations() -> dict[str, str]:
    renames = {}
    for migration in MigrationLoader(None, ignore_no_migrations=True).disk_migrations.values():
        for operation in migration.operations:
            if isinstance(operation, RenameHandlers):
                renames.update(operation.renames)
    return renames


@pytest.mark.django_db(transaction=True)
def test_migrating_renames_the_inbox_and_dead_letters_and_reversing_puts_the_old_names_back():
    # The bus's names are stable already (messaging 0008 is applied): a rename written when
    # names were functions' paths moves the old rows to the handler's stable name.
    call_command("migrate", "basket", "0001", verbosity=0)
    handled, untouched = _handled(OLD), _handled(OTHER)
    letter = DeadLetter.objects.create(context="basket", consumer=OLD, reason=DeadLetter.Reason.HANDLER_FAILED,
                                       error="KeyError: 'sku'")

    call_command("migrate", "basket", verbosity=0)
    renamed = {row.pk: row.consumer for row in InboxMessage.objects.all()}
    letter.refresh_from_db()
    renamed_letter = letter.consumer
    call_command("migrate", "basket", "0001", verbosity=0)
    letter.refresh_from_db()

    assert renamed == {handled.pk: STABLE, untouched.pk: OTHER} and renamed_letter == STABLE
    assert set(InboxMessage.objects.values_list("consumer", flat=True)) == {OLD, OTHER}
    assert letter.consumer == OLD
    call_command("migrate", "basket", verbosity=0)


@pytest.mark.django_db
def test_a_message_handled_under_both_names_keeps_one_row():
    message_id = uuid.uuid4()
    _handled(OLD, message_id), _handled(STABLE, message_id)

    RenameHandlers({OLD: NEW}).code(apps, connection.schema_editor())

    assert list(InboxMessage.objects.values_list("message_id", "consumer")) == [(message_id, STABLE)]


def test_every_renamed_handler_is_a_handler_of_today_under_its_new_name_only():
    renames = _renames_in_migrations()
    names = {handler.function for handler in registry.handlers}

    assert renames and set(renames.values()) <= names
    assert not set(renames) & names


@pytest.mark.django_db(transaction=True)
def test_the_move_to_stable_names_keeps_what_each_handler_handled_and_reverses():
    call_command("migrate", "messaging", "0007", verbosity=0)
    message_id = uuid.uuid4()
    handled = _handled(NEW, message_id)
    already_moved = _handled("basket:catalog.ProductPriceChanged", message_id)  # new code ran first
    stranger = _handled("apps.gone.handlers.on_something")
    letter = DeadLetter.objects.create(context="ordering", consumer=OTHER, reason=DeadLetter.Reason.HANDLER_FAILED,
                                       error="KeyError: 'sku'")

    call_command("migrate", "messaging", verbosity=0)
    moved = dict(InboxMessage.objects.values_list("pk", "consumer"))
    letter.refresh_from_db()

    assert moved == {already_moved.pk: "basket:catalog.ProductPriceChanged", stranger.pk: "apps.gone.handlers.on_something"}
    assert not InboxMessage.objects.filter(pk=handled.pk).exists()
    assert letter.consumer == "ordering:catalog.ProductPriceChanged"
    call_command("migrate", "messaging", "0007", verbosity=0)
    letter.refresh_from_db()
    assert letter.consumer == OTHER
    assert set(InboxMessage.objects.values_list("consumer", flat=True)) == {NEW, "apps.gone.handlers.on_something"}
    call_command("migrate", "messaging", verbosity=0)


def test_a_handler_keeps_its_consumer_name_when_its_function_is_renamed_or_moved():
    [handler] = registry.handlers_for("catalog.ProductPriceChanged", "basket")

    def elsewhere(event):  # the same subscriber, another function in another module
        return handler.func(event)

    moved = dataclasses.replace(handler, func=elsewhere)
    moved.func.__module__ = "apps.basket.subscribers"

    assert handler.name == moved.name == "basket:catalog.ProductPriceChanged"
    assert moved.function != handler.function
