"""seed_demo from the shell, on a database never migrated: one clear error, nothing seeded."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.process


def test_seeding_an_unmigrated_database_is_one_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "manage.py", "seed_demo"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={"PATH": "/usr/bin:/bin", "BUS_DATA_DIR": str(tmp_path)})

    assert result.returncode == 1
    assert result.stderr.strip().startswith("CommandError: nothing was seeded: no such table")
    assert "has `python manage.py migrate` run?" in result.stderr
