"""The documentation site builds with ``mkdocs build --strict``, as CI builds it: every link valid,
every page in the navigation, no warning; and the README stays a landing page."""

import os
import re
import subprocess
import sys

import pytest

from tests.docs.examples import ROOT, examples

pytestmark = pytest.mark.e2e

#: About a screen: what it is, the two commands, a picture, links.
README_MOST_LINES = 150
#: The two commands that work on a fresh machine, first in the README, in this order.
README_COMMANDS = [
    "python -m pip install -r requirements.txt && python manage.py run_platform",
    "scripts/test",
]


def test_the_site_builds_strict_without_a_warning(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs requirements are not installed: pip install -r docs/requirements.txt")
    # When the site is built as CI builds it (no network: no fonts, no plugin that fetches)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    output = result.stdout + result.stderr
    # Then it builds, and says nothing worse than INFO
    assert result.returncode == 0, output
    assert not re.search(r"^(WARNING|ERROR)\b", output, re.MULTILINE), output
    assert (tmp_path / "site" / "reference" / "settings.html").is_file()


def test_the_readme_is_a_landing_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MOST_LINES
    # Its first shell examples are the two commands, each alone in its block.
    first = [e.body.strip() for e in examples() if e.path.name == "README.md"][:2]
    assert first == README_COMMANDS
