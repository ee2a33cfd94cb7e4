"""System checks: ``manage.py check`` fails on a registry mistake."""

from django.core import checks

from messaging.registry import registry


@checks.register("messaging")
def check_message_registry(app_configs, **kwargs):
    return [
        (checks.Warning if check_id.split(".")[1].startswith("W") else checks.Error)(message, id=check_id)
        for check_id, message in registry.problems()
    ]
