"""The rolling-deploy test's release before (``tests/integration/rolling_deploy``) can still be made
from this checkout: its patch applies, and takes the contract change out. Seconds here, where the
integration test would find out only after starting its processes."""

import shutil
import subprocess

import pytest

from tests.integration.test_rolling_deploy import BEFORE_PATCH, ROOT

pytestmark = pytest.mark.process


def test_the_patch_that_makes_the_release_before_still_applies(tmp_path):
    shutil.copytree(ROOT / "apps", tmp_path / "apps", ignore=shutil.ignore_patterns("__pycache__"))

    applied = subprocess.run(["git", "apply", "-p1", str(BEFORE_PATCH)], cwd=tmp_path, capture_output=True, text=True)

    assert applied.returncode == 0, applied.stderr
    messages = (tmp_path / "apps" / "catalog" / "messages.py").read_text()
    assert "currency" not in messages and "version = 2" not in messages
    assert "currency" not in (tmp_path / "apps" / "ordering" / "models.py").read_text()
