"""The test settings without the operator console: the bus is a library and must run,
with every test of its own, in a project that leaves the console out
(``scripts/test`` runs ``tests/unit`` once more with these, ``tests/unit/console`` aside)."""

from config.settings.test import *  # noqa: F403
from config.settings.test import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "console"]
