"""``messaging`` is imported while Django loads the apps (a context's ``messages`` and
``handlers`` modules import it), before any model may be: in a fresh interpreter it
imports before ``django.setup()`` and loads no model, and its lazy names work after."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, sys
sys.path[:0] = ["platform", "."]
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
import messaging
assert "messaging.models" not in sys.modules, sorted(m for m in sys.modules if m.startswith("messaging"))
import django
django.setup()
from messaging import ConversationLinkAdmin, MessageRejectedError, Outbox, ReadOnlyAdmin, RenameHandlers
print("ok", Outbox.__module__)
"""


def test_the_package_imports_before_django_is_set_up_and_its_lazy_names_after(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "BUS_DATA_DIR": str(tmp_path)})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok messaging.outbox"
