"""Consumer names no longer follow the handler's function: ``<context>:<message type>``.

Rows stored under a handler's former name, its function's dotted path, move to
its new one, so what it handled stays handled. The handlers are the code's
(``messaging.registry``): this runs once, with the code that brought the new
names. Also the dead letters' new reason, a message newer than its consumer's code.
"""

from django.db import migrations, models

from messaging.migration_operations import rename_consumers


def _renames() -> dict[str, str]:
    # The registry as the code fills it at start-up (``migrate`` loads every app first).
    from messaging.registry import registry

    return {handler.function: handler.name for handler in registry.handlers}


def forwards(apps, schema_editor):
    rename_consumers(apps, schema_editor.connection.alias, _renames())


def backwards(apps, schema_editor):
    rename_consumers(apps, schema_editor.connection.alias, {new: old for old, new in _renames().items()})


class Migration(migrations.Migration):

    dependencies = [
        ('messaging', '0007_dead_letter_reopened'),
    ]

    operations = [
        migrations.AlterField(
            model_name='deadletter',
            name='reason',
            field=models.CharField(choices=[('handler_failed', 'Handler failed after all retries'), ('invalid_envelope', 'Invalid or undecodable envelope'), ('invalid_data', 'Data does not match the contract'), ('unknown_type', 'Unknown message type'), ('newer_version', "Newer version than the consumer's code"), ('unreadable', 'Not a task message the worker can read'), ('broker', 'Dead-lettered by the broker')], max_length=32),
        ),
        migrations.RunPython(forwards, backwards),
    ]
