"""Rules about the repository itself that a refactoring must not break (those a fresh
process or a command-line tool checks: ``tests/process/test_project_layout.py``)."""

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_models_and_migrations_agree():
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


#: The test tools production never needs, whichever file lists them.
TEST_TOOLS = {"pytest", "pytest-django", "hypothesis", "import-linter", "playwright", "mkdocs", "mkdocs-material"}


def _requirements(path: Path) -> set[str]:
    """The distributions ``path`` pins, with the files it includes (``-r``), by normalised name."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            names |= _requirements(path.parent / line[2:].strip())
        elif line:
            names.add(re.split(r"[\[=<>~!; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_the_runtime_requirements_name_no_tool_of_the_tests_the_benchmarks_or_the_docs():
    runtime = _requirements(ROOT / "requirements.txt")
    other_roles = [ROOT / "tests" / "requirements.txt", ROOT / "bench" / "requirements.txt",
                   ROOT / "docs" / "requirements.txt"]
    tools = TEST_TOOLS.union(*(_requirements(path) for path in other_roles if path.exists()))

    assert {"django", "celery", "psycopg", "gunicorn"} <= runtime
    assert not runtime & tools


def test_the_production_image_installs_the_runtime_requirements_only():
    installs = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if "pip install" in line]

    assert installs and all(re.findall(r"-r\s+(\S+)", line) == ["requirements.txt"] for line in installs), installs
