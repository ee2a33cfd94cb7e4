"""Rules about the repository itself that a refactoring must not break, checked from outside:
a fresh interpreter, ``lint-imports`` and ``docker-compose config``."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.process


def test_platform_folder_does_not_shadow_the_standard_library():
    result = subprocess.run(
        [sys.executable, "-c", "import platform, celery; print(platform.system(), platform.__file__)"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    system, location = result.stdout.split()
    assert system == "Linux"
    assert not location.startswith(str(ROOT))
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_contexts_import_each_other_only_through_messages():
    result = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "platform")})
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_file_is_valid_and_has_no_default_credentials(tmp_path):
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is not installed (scripts/test installs it)"
    secrets = {"DJANGO_SECRET_KEY": "s", "POSTGRES_PASSWORD": "p", "RABBITMQ_PASSWORD": "r", "FLOWER_BASIC_AUTH": "u:p"}
    base_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    configured = subprocess.run([compose, "config", "-q"], cwd=ROOT, capture_output=True, text=True,
                                env={**base_env, **secrets})
    unconfigured = subprocess.run([compose, "config", "-q"], cwd=ROOT, capture_output=True, text=True, env=base_env)

    assert configured.returncode == 0, configured.stderr
    assert unconfigured.returncode != 0 and "in .env" in unconfigured.stderr
