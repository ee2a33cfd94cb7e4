"""Finding messages by any value in them, from the outbox admin's search box."""

import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_create
from messaging.models import OutboxMessage
from tests.memory_bus import deliver_all

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
OUTBOX = "admin:messaging_outboxmessage_changelist"


@pytest.fixture
def two_checkouts(db):
    """Alice's and Bob's checkouts of different products, delivered."""
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)
    product_create(sku="TEAPOT-7", name="Teapot", price=Decimal("30.00"), stock=5)
    basket_add_item(customer_id="alice-42", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_add_item(customer_id="bob-17", sku="TEAPOT-7", quantity=1, unit_price=Decimal("30.00"))
    orders = {customer: basket_checkout(customer_id=customer) for customer in ("alice-42", "bob-17")}
    deliver_all()
    return orders


def found(admin_client, search: str) -> list[tuple[str, uuid.UUID]]:
    response = admin_client.get(reverse(OUTBOX), {"q": search})
    return sorted((row.message_type, row.correlation_id) for row in response.context["cl"].result_list)


def test_a_value_in_the_data_finds_every_message_that_mentions_it(admin_client, two_checkouts):
    alice = two_checkouts["alice-42"]

    assert found(admin_client, "alice-42") == [
        ("ordering.ExpireOrder", alice), ("ordering.OrderStarted", alice), ("ordering.PlaceOrder", alice),
        ("payment.ProcessPayment", alice),
    ]
    assert found(admin_client, "TEAPOT-7") == [
        ("catalog.ReserveStock", two_checkouts["bob-17"]), ("ordering.PlaceOrder", two_checkouts["bob-17"]),
    ]


def test_an_order_id_finds_its_messages_and_no_others(admin_client, two_checkouts):
    alice = two_checkouts["alice-42"]

    messages = found(admin_client, str(alice).upper())

    assert {correlation for _, correlation in messages} == {alice}
    assert len(messages) == OutboxMessage.objects.filter(correlation_id=alice).count() == 8


def test_every_term_of_a_search_must_appear(admin_client, two_checkouts):
    assert found(admin_client, "alice-42 ProcessPayment") == [
        ("payment.ProcessPayment", two_checkouts["alice-42"])]
    assert found(admin_client, '"alice-42" "no such thing"') == []


def test_the_search_reads_the_trigram_index(admin_client, two_checkouts):
    assert connection.vendor == "postgresql", "the index is PostgreSQL's; unit tests run on PostgreSQL"
    queryset = admin_client.get(reverse(OUTBOX), {"q": "alice-42"}).context["cl"].queryset

    with connection.cursor() as cursor:
        # A table this small is cheaper to read whole, or in id order along its primary key:
        # ask what else serves the query (a bitmap scan needs an index that matches it).
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        plan = queryset.explain()

    assert "Bitmap Index Scan on outbox_envelope_trgm_idx" in plan, plan
    assert len(queryset) == 4


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
