"""Which bounded context a piece of code belongs to: the installed app containing its module.

A context is a Django app; its label (``catalog``, ``basket``) names it on the
bus, as the source of what it sends and the owner of the contracts in its
``messages`` module. A message no context sent (from a shell, a management
command, the admin) has ``OPERATOR_SOURCE`` as its source. Kept apart from
the registry so that contracts, which need to know their owner, import
nothing else of the bus.
"""

import functools

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

#: Source of a message sent from outside every context (shell, management command, admin).
OPERATOR_SOURCE = "operator"


@functools.cache
def context_of_module(module_name: str) -> str | None:
    """The label of the installed app containing ``module_name``, if any.

    Cached: it is asked for every message handled, and installed apps do not
    change once Django is ready (before that it raises, and nothing is cached).
    """
    app_config = apps.get_containing_app_config(module_name)
    return app_config.label if app_config else None


def worker_context() -> str:
    """The context whose handlers this worker process runs (``BUS_CONTEXT``, which
    ``python -m workers <context>`` sets); read once by what a worker starts with."""
    if not settings.BUS_CONTEXT:
        raise ImproperlyConfigured("BUS_CONTEXT is not set: start workers with `python -m workers <context>`")
    return settings.BUS_CONTEXT
