"""The reference pages name everything the code has: every management command, and every
setting or environment variable the platform reads. A command or a setting added without
its documentation fails here."""

import importlib.util
import re
import sys

from tests.docs.examples import ROOT

COMMANDS_PAGE = ROOT / "docs" / "reference" / "commands.md"
SETTINGS_PAGE = ROOT / "docs" / "reference" / "settings.md"
#: Where management commands live, wherever they move between apps.
COMMAND_FOLDERS = ("platform/*/management/commands", "demo/management/commands")
#: A variable read through the settings' reader: env("X"), env.int("X"), env_duration("X"), required("X").
SETTINGS_READ = re.compile(r"\b(?:env(?:\.\w+)?|env_duration|required)\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
#: A variable read straight from the process environment.
PROCESS_READ = re.compile(r"os\.(?:environ(?:\.get|\.setdefault)?|getenv)[\[(]\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
#: Read from the environment but no setting: passed on to child processes as it is.
NOT_SETTINGS = {"PYTHONPATH"}


def _settings_hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _settings_reference() -> str:
    """The settings page as the site shows it: the hand-written text and the generated tables."""
    hook = _settings_hook()
    generated, _ = hook.settings_reference(ROOT)
    return SETTINGS_PAGE.read_text().replace(hook.SETTINGS_MARKER, generated)


def _sources(*patterns: str):
    for pattern in patterns:
        yield from (p for p in sorted(ROOT.glob(pattern)) if "__pycache__" not in p.parts)


def test_every_management_command_is_on_the_reference_page():
    commands = {p.stem for folder in COMMAND_FOLDERS for p in ROOT.glob(f"{folder}/*.py") if not p.name.startswith("_")}
    assert "run_platform" in commands and "seed_demo" in commands  # the globs still find them
    documented = set(re.findall(r"^### `(\w+)`", COMMANDS_PAGE.read_text(), re.MULTILINE))
    assert commands - documented == set(), "commands missing from docs/reference/commands.md"
    assert documented - commands == set(), "docs/reference/commands.md documents commands that are gone"


def test_every_setting_read_from_the_environment_is_on_the_reference_page():
    read = {name for path in _sources("platform/config/**/*.py", "apps/*/app_settings.py")
            for name in SETTINGS_READ.findall(path.read_text())}
    assert {"BUS_DATA_DIR", "DATABASE_URL", "PAYMENT_APPROVAL_LIMIT"} <= read  # the patterns still find them
    page = _settings_reference()
    missing = sorted(name for name in read if f"`{name}`" not in page)
    assert missing == [], "settings missing from docs/reference/settings.md"


def test_every_variable_a_process_reads_is_on_the_reference_page():
    read = {name for path in _sources("platform/**/*.py", "apps/**/*.py", "workers/**/*.py", "demo/**/*.py",
                                      "manage.py")
            for name in PROCESS_READ.findall(path.read_text())} - NOT_SETTINGS
    page = _settings_reference()
    missing = sorted(name for name in read if f"`{name}`" not in page)
    assert missing == [], "environment variables missing from docs/reference/settings.md"


def test_every_setting_of_the_bus_says_why_in_the_code():
    # The reference's "why" is the #: comment above each setting: the build warns (and --strict fails)
    # without one; this says which.
    _, problems = _settings_hook().settings_reference(ROOT)
    assert problems == []
