"""A new subscriber catches up, on RabbitMQ and on Redis, with the platform's processes:
``republish_outbox --to ordering --type catalog.ProductPriceChanged`` runs here, the real
relay publishes its copies to ordering's queue alone, and ordering's real worker handles
them, in order; basket, the other subscriber, sees none of them.

The history is price changes the catalog made through its service and that were
published before ordering subscribed: outbox rows already marked published, never
delivered to it (written so in one transaction, or the relay would send them to all).
"""

import datetime
import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.catalog.services import product_change_price, product_create
from apps.ordering.models import PriceListEntry
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.registry import registry
from tests.integration import redis
from tests.integration.broker_contract import OnOneBroker
from tests.polling import wait_for

pytestmark = pytest.mark.integration

PRICE_CHANGED = "catalog.ProductPriceChanged"
ORDERING_WORKER = "worker-ordering"


def _price_history(sku: str, count: int) -> list[OutboxMessage]:
    """``count`` price changes of a new product, published an hour ago to the subscribers of then."""
    product_create(sku=sku, name="Lamp", price=Decimal("20.00"))
    with transaction.atomic():  # marked published before the relay can see them
        for step in range(count):
            product_change_price(sku=sku, new_price=Decimal("20.00") + step + 1)
        history = OutboxMessage.objects.filter(message_type=PRICE_CHANGED, envelope__data__sku=sku)
        history.update(published_at=timezone.now() - datetime.timedelta(hours=1))
    return list(history.order_by("available_at", "id"))


def _inbox_of(context: str):
    consumers = [handler.name for handler in registry.handlers_for(PRICE_CHANGED, context)]
    return InboxMessage.objects.filter(consumer__in=consumers, message_type=PRICE_CHANGED)


class CatchUpOnABroker(OnOneBroker):
    @pytest.fixture
    def ordering_one_at_a_time(self, platform):
        """Ordering's worker with one pool process, so the order it handles its queue in is the
        queue's (two would share the queue, and either may commit first); as before afterwards."""
        command = platform.commands[ORDERING_WORKER]

        def restart(with_command):
            platform[ORDERING_WORKER].terminate()
            platform[ORDERING_WORKER].wait(timeout=60)
            platform.commands[ORDERING_WORKER] = with_command
            platform.start(ORDERING_WORKER)
            platform.wait_until_ready([ORDERING_WORKER])

        restart([*[arg for arg in command if not arg.startswith("--concurrency")], "--concurrency=1"])
        yield
        restart(command)

    def test_ordering_receives_the_history_alone_in_order_and_absorbs_what_it_had(
        self, bus, ordering_one_at_a_time,
    ):
        sku = f"LATE-{uuid.uuid4().hex[:8]}"
        missed = _price_history(sku, 5)
        # One more, published live once ordering's queue was bound: both subscribers had it.
        product_change_price(sku=sku, new_price=Decimal("30.00"))
        had = OutboxMessage.objects.filter(message_type=PRICE_CHANGED, envelope__data__sku=sku).latest("id")
        wait_for(lambda: _inbox_of("ordering").filter(message_id=had.message_id).exists()
                 and _inbox_of("basket").filter(message_id=had.message_id).exists(),
                 message="both subscribers to handle the live price change")
        had_by_ordering = _inbox_of("ordering").get(message_id=had.message_id)
        basket_newest = _inbox_of("basket").aggregate(newest=Max("id"))["newest"]

        call_command("republish_outbox", "--to", "ordering", "--type", PRICE_CHANGED, "--last", "PT2H",
                     "--rate", "20")
        bus.run_until_quiet()

        # A copy of each went to ordering's queue alone, in the outbox's order, each confirmed.
        copies = OutboxMessage.objects.filter(redeliver_to="ordering", envelope__data__sku=sku).order_by("id")
        assert [copy.message_id for copy in copies] == [row.message_id for row in [*missed, had]]
        assert all(copy.published_at is not None for copy in copies)
        # Ordering handled the five it missed, in that order, and its inbox absorbed the one it had.
        handled = _inbox_of("ordering").filter(message_id__in=[row.message_id for row in missed]).order_by("id")
        assert [row.message_id for row in handled] == [row.message_id for row in missed]
        assert _inbox_of("ordering").get(message_id=had.message_id) == had_by_ordering
        assert PriceListEntry.objects.get(sku=sku).price == Decimal("30.00")
        # Basket, subscribed all along, saw no copy.
        assert _inbox_of("basket").filter(message_id__in=[row.message_id for row in missed]).count() == 0
        assert _inbox_of("basket").aggregate(newest=Max("id"))["newest"] == basket_newest
        assert DeadLetter.objects.count() == 0

    def test_a_second_run_sends_nothing_again(self, bus, capsys):
        sku = f"AGAIN-{uuid.uuid4().hex[:8]}"
        history = _price_history(sku, 3)
        since = (timezone.now() - datetime.timedelta(hours=2)).isoformat()
        command = ["republish_outbox", "--to", "ordering", "--type", PRICE_CHANGED, "--since", since]

        call_command(*command)
        call_command(*command)
        bus.run_until_quiet()

        assert capsys.readouterr().out.splitlines()[-1].startswith("nothing to send: ")
        assert OutboxMessage.objects.filter(redeliver_to="ordering", envelope__data__sku=sku).count() == len(history)
        assert _inbox_of("ordering").filter(message_id__in=[row.message_id for row in history]).count() == 3


class TestCatchUpOnRabbitMQ(CatchUpOnABroker):
    @pytest.fixture(scope="class")
    def broker_url(self) -> str:
        return settings.CELERY_BROKER_URL


class TestCatchUpOnRedis(CatchUpOnABroker):
    @pytest.fixture(scope="class")
    def broker_url(self, redis_server) -> str:
        return redis_server.url

    @pytest.fixture(scope="class")
    def platform_env(self) -> dict[str, str]:
        return redis.PLATFORM_ENV
