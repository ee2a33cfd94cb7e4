"""docker-compose's own reading of the compose files: ``docker-compose config`` with exactly
the variables given, parsed, as the process tests check the stack it describes."""

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: What .env must fill in for the base file (tests add REDIS_PASSWORD for the Redis one).
FILLED_IN = {"DJANGO_SECRET_KEY": "s", "POSTGRES_PASSWORD": "p", "RABBITMQ_PASSWORD": "r", "FLOWER_BASIC_AUTH": "u:p"}


def compose_config(home: Path, variables: dict, files=("docker-compose.yml",)) -> dict:
    """The resolved stack, every ``$$`` (compose's escape in its output) read back as ``$``."""
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is not installed (scripts/test installs it)"
    resolved = subprocess.run([compose, *(f"--file={name}" for name in files), "config"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(home), **variables})
    assert resolved.returncode == 0, resolved.stderr
    return yaml.safe_load(resolved.stdout.replace("$$", "$"))
