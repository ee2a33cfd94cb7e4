"""A new context made by following the docs, word for word, in a copy of the project.

"Add a context" (``docs/how-to/add-a-context.md``) and "Test a context"
(``docs/how-to/test-a-context.md``) are followed as a reader would: their shell
blocks run, their files (each code block that names its file on its first line)
written, the app added to ``INSTALLED_APPS``; then the guide's own test of the new
handler runs with ``messaging.testing``, and so do the project's tests that must
not break when a context is added. A guide that drifts from the code fails here.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ROOT / "docs" / "how-to"
#: What a copy of the project needs to run manage.py and its tests.
PROJECT = ("manage.py", "pyproject.toml", "platform", "apps", "workers", "demo", "tests")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: A code block that names its file: ``# apps/shipping/models.py`` on its first line.
NAMED_FILE = re.compile(r"\A# (apps/shipping/\w+\.py)\n")


def _blocks(guide: str) -> list[tuple[str, str]]:
    return [(match.group(1), match.group(2)) for match in FENCE.finditer((GUIDES / guide).read_text())]


def _copy_of_the_project(into: Path) -> Path:
    for name in PROJECT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__", "artifacts", "var"))
        else:
            shutil.copy(source, into / name)
    return into


def _run(command: str | list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, shell=isinstance(command, str), capture_output=True,
                            text=True, timeout=300, executable="/bin/bash" if isinstance(command, str) else None)
    assert result.returncode == 0, f"{command!r} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_a_context_added_and_tested_as_the_docs_say_works(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _copy_of_the_project(project)
    env = {**os.environ, "BUS_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": ""}
    for variable in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(variable, None)  # the embedded default, as a reader starts
    add_a_context = _blocks("add-a-context.md")
    shell_blocks = [code for language, code in add_a_context if language == "sh"]
    python_blocks = [code for language, code in add_a_context if language == "python"]

    # 1. Make the app: the guide's commands (mkdir, manage.py startapp, rm), as written.
    _run(shell_blocks[0].replace("python ", f"{sys.executable} "), project, env)
    assert not (project / "apps/shipping/views.py").exists()
    # Its apps.py, then every file the guide names (the first block of each: later ones are variations).
    [apps_py] = [code for code in python_blocks if code.startswith("from django.apps import AppConfig")]
    (project / "apps/shipping/apps.py").write_text(apps_py)
    written = set()
    for code in python_blocks:
        named = NAMED_FILE.match(code)
        if named and named.group(1) not in written:
            written.add(named.group(1))
            (project / named.group(1)).write_text(code)
    assert written == {f"apps/shipping/{name}.py" for name in ("models", "messages", "services", "handlers", "admin")}
    # INSTALLED_APPS lives where the guide says.
    assert "`INSTALLED_APPS`, which lives in `platform/config/settings/base.py`" in (GUIDES / "add-a-context.md").read_text()
    settings_file = project / "platform/config/settings/base.py"
    settings_text = settings_file.read_text()
    assert '    "apps.payment",\n' in settings_text
    settings_file.write_text(settings_text.replace('    "apps.payment",\n', '    "apps.payment",\n    "apps.shipping",\n'))

    # 7. Migrations, checks, topology: the guide's commands, as written.
    migrations_block = next(code for code in shell_blocks if "makemigrations shipping" in code)
    result = _run(migrations_block.replace("python ", f"{sys.executable} "), project, env)
    assert "shipping.events.ordering.OrderPaid" in result.stdout

    # "Test a context": the guide's test, where it says to put it, on the fixture it says to use.
    [test_code] = [code for language, code in _blocks("test-a-context.md")
                   if language == "python" and "def test_" in code]
    (project / "tests/unit/test_shipping.py").write_text(test_code)
    assert 'pytest_plugins = ["messaging.testing"]' in (project / "tests/conftest.py").read_text()
    # With it, the project's own tests that know the contexts still pass.
    result = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                   "tests/unit/test_shipping.py", "tests/unit/test_registry.py", "tests/unit/test_flows.py"],
                  project, env)
    assert "passed" in result.stdout and "failed" not in result.stdout
