"""The outbox admin's search on the embedded default: a fresh SQLite database migrates
without PostgreSQL's trigram index, and the search still finds what it should."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.process


def test_the_embedded_default_migrates_and_searches_without_the_index(tmp_path):
    database = f"sqlite:///{tmp_path / 'platform.sqlite3'}"
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": database, "BUS_DATA_DIR": str(tmp_path)}
    search = (
        "from decimal import Decimal; from apps.catalog.services import product_create, product_change_price; "
        "from messaging.models import OutboxMessage; from console.conversation_search import search_envelopes; "
        "product_create(sku='MUG-1', name='Mug', price=Decimal('1.00')); "
        "product_change_price(sku='MUG-1', new_price=Decimal('2.00')); "
        "print(search_envelopes(OutboxMessage.objects.all(), 'mug-1').count(), "
        "search_envelopes(OutboxMessage.objects.all(), 'TEAPOT').count())"
    )

    migrated = _manage(["migrate"], env=env)
    searched = _manage(["shell", "-c", search], env=env)

    assert migrated.returncode == 0, migrated.stderr
    assert "Applying messaging.0006_outbox_envelope_search... OK" in migrated.stdout
    assert searched.returncode == 0, searched.stderr
    assert searched.stdout.split()[-2:] == ["1", "0"]


def _manage(args: list[str], *, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env, check=False)
