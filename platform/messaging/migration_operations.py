"""Migration operations the bus offers to contexts: renaming a consumer without forgetting what it handled.

A handler's consumer name (``<context>:<message type>``, or the ``name=`` it was
given) is the inbox key that makes a redelivered message change nothing, and the
consumer a dead letter names. It does not change when the function is renamed
or moved; changing a given ``name=`` alone would make every message it handled
look new to it. ``RenameHandlers`` moves the stored names in the same deploy,
and back when the migration is reversed. (Before consumer names were stable,
they were the function's dotted path, and this was how a function was renamed.)
"""

from django.db import migrations


class RenameHandlers(migrations.RunPython):
    """Rename consumers in the inbox and the dead letters: ``{old name: new name}``.

    Put it in a migration of the context that owns the handlers, depending on
    the latest ``messaging`` migration. Apply it before the renamed code
    handles anything: a message the old code handles after the migration is
    stored under the old name, and a redelivery of it would be handled again.
    """

    def __init__(self, renames: dict[str, str]) -> None:
        self.renames = dict(renames)
        super().__init__(self._forwards, self._backwards)

    def deconstruct(self):
        return (self.__class__.__qualname__, [self.renames], {})

    def describe(self) -> str:
        return f"Rename {len(self.renames)} handler(s) in the inbox and the dead letters"

    def _forwards(self, apps, schema_editor) -> None:
        rename_consumers(apps, schema_editor.connection.alias, self._renames_today())

    def _backwards(self, apps, schema_editor) -> None:
        rename_consumers(apps, schema_editor.connection.alias, {new: old for old, new in self._renames_today().items()})

    def _renames_today(self) -> dict[str, str]:
        """The renames, each new name that is a handler function's path given as that handler's
        consumer name: a rename written when names were functions' paths, applied after the bus
        moved to stable names (its ``0008_stable_consumer_names``), must not bring them back."""
        from messaging.registry import registry  # as the code fills it: ``migrate`` loads every app first

        consumer_of = {handler.function: handler.name for handler in registry.handlers}
        return {old: consumer_of.get(new, new) for old, new in self.renames.items()}


def rename_consumers(apps, database: str, renames: dict[str, str]) -> None:
    """Move the inbox rows and dead letters of each old consumer name to its new one."""
    inbox = apps.get_model("messaging", "InboxMessage").objects.using(database)
    dead_letters = apps.get_model("messaging", "DeadLetter").objects.using(database)
    for old, new in renames.items():
        # A message already handled under the new name (by new code that ran
        # before the migration) keeps that one row: (message id, consumer) is unique.
        inbox.filter(consumer=old, message_id__in=inbox.filter(consumer=new).values("message_id")).delete()
        inbox.filter(consumer=old).update(consumer=new)
        dead_letters.filter(consumer=old).update(consumer=new)
