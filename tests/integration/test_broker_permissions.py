"""With a broker user per role (``bus_permissions --apply``), the platform runs and each context
stays inside its own names: RabbitMQ refuses ordering's user another context's queue or events.

Each test gets a vhost of its own, an administrator to make the users through the management
API, and the users; all are deleted afterwards. The topology is declared as the deploy guide
says, by ``bus_topology --apply`` as the tests' user (every right on the vhost): neither the
relay nor a worker may.
"""

import os
import secrets
import subprocess
import sys
import urllib.parse
from decimal import Decimal

import amqp
import pytest
from amqp.exceptions import AccessRefused
from django.core.management import call_command
from kombu import Connection

from apps.basket.services import basket_add_item, basket_checkout
from apps.catalog.services import product_create
from apps.ordering.models import Order
from messaging import broker_permissions
from tests.integration.conftest import ROOT
from tests.integration.platform_bus import PlatformBus
from tests.integration.rabbitmq import empty_vhost, rabbitmqctl, rabbitmqctl_run
from tests.polling import wait_for

pytestmark = pytest.mark.integration

WORKERS = ["worker-catalog", "worker-basket", "worker-ordering", "worker-payment"]


@pytest.fixture
def role_urls(real_services, transactional_db, settings, monkeypatch):
    """A vhost of the test's own and a user per role on it, made by ``bus_permissions --apply``:
    the broker URL of each role (by ``broker_permissions.url_variable``), and the vhost's URL for
    the tests' own user (every right)."""
    vhost = f"{settings.CELERY_BROKER_URL.rsplit('/', 1)[-1]}-perms-{os.getpid()}"
    prefix, admin, admin_password = f"{vhost}-", f"{vhost}-admin", secrets.token_urlsafe(16)
    roles = broker_permissions.derive()
    with empty_vhost(vhost) as url:
        rabbitmqctl_run("add_user", admin, admin_password)
        try:
            rabbitmqctl_run("set_user_tags", admin, "administrator")
            management = urllib.parse.urlsplit(settings.BUS_RABBITMQ_MANAGEMENT_URL or "http://127.0.0.1:15672")
            settings.BUS_RABBITMQ_MANAGEMENT_URL = management._replace(
                netloc=f"{admin}:{admin_password}@{management.netloc.rsplit('@', 1)[-1]}").geturl()
            passwords = {role.role: secrets.token_urlsafe(16) for role in roles}
            for role, password in passwords.items():
                monkeypatch.setenv(broker_permissions.password_variable(role), password)

            call_command("bus_permissions", "--apply", "--vhost", vhost, "--user-prefix", prefix)

            yield url, {
                broker_permissions.url_variable(role.role): broker_permissions.role_url(
                    url, user=role.user(prefix), password=passwords[role.role], vhost=vhost)
                for role in roles
            }
        finally:
            for user in (admin, *(role.user(prefix) for role in roles)):
                rabbitmqctl_run("delete_user", user, check=False)


def _declare_the_topology(env: dict) -> None:
    """``bus_topology --apply`` as the deploy guide runs it, in the processes' environment
    (their retry schedule names the retry queues) with a user that may declare."""
    subprocess.run([sys.executable, "manage.py", "bus_topology", "--apply"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=60)


def test_a_checkout_ends_paid_with_a_broker_user_per_context_and_for_the_relay(role_urls, start_platform):
    url, urls = role_urls
    processes = start_platform([], CELERY_BROKER_URL=url, **urls)
    _declare_the_topology(processes.env)
    for name in [*WORKERS, "relay"]:
        processes.start(name)
    processes.wait_until_ready(WORKERS)
    product_create(sku="MUG-1", name="Mug", price=Decimal("10.00"), stock=5)

    basket_add_item(customer_id="c1", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))
    order_id = basket_checkout(customer_id="c1")
    PlatformBus(processes).run_until_quiet()

    assert Order.objects.get(id=order_id).status == Order.Status.PAID
    # Each worker ran as its own user, knowing it may not declare (and the relay likewise).
    logs = {name: processes[name].log_path.read_text() for name in [*WORKERS, "relay"]}
    assert all("may not declare the topology" in log for log in logs.values()), logs
    assert not any("ACCESS_REFUSED" in log for log in logs.values()), logs


def test_orderings_user_is_refused_catalogs_commands_and_catalogs_events(role_urls, start_platform):
    url, urls = role_urls
    _declare_the_topology(start_platform([], CELERY_BROKER_URL=url).env)

    with Connection(urls["BUS_BROKER_URL_ORDERING"]) as ordering:
        # Its own queue, to show the refusals below are about the names, not the login.
        assert ordering.channel().basic_get(queue="ordering.commands") is None

        with pytest.raises(AccessRefused) as read:
            ordering.channel().basic_get(queue="catalog.commands")
        with pytest.raises(AccessRefused) as publish:
            ordering.channel().basic_publish_confirm(
                amqp.Message(b"{}"), exchange="events.catalog.ProductPriceChanged", routing_key="catalog.ProductPriceChanged")
        with pytest.raises(AccessRefused):
            ordering.channel().basic_publish_confirm(amqp.Message(b"{}"), exchange="commands",
                                                     routing_key="catalog.ReserveStock")

    assert read.value.code == 403 and "access to queue 'catalog.commands'" in str(read.value)
    assert publish.value.code == 403
    assert "access to exchange 'events.catalog.ProductPriceChanged'" in str(publish.value)


def test_orderings_retries_reach_no_other_contexts_queue(role_urls, start_platform):
    url, urls = role_urls
    _declare_the_topology(start_platform([], CELERY_BROKER_URL=url).env)
    # As the processes' retry schedule names them.
    retry_exchange = next(e["name"] for e in rabbitmqctl("list_exchanges", "name", vhost=url.rsplit("/", 1)[-1])
                          if e["name"].startswith("retry.ordering."))

    with Connection(urls["BUS_BROKER_URL_ORDERING"]) as ordering:
        # Catalog's retry exchange is not ordering's to publish to,
        with pytest.raises(AccessRefused) as publish:
            ordering.channel().basic_publish_confirm(amqp.Message(b"{}"), exchange=retry_exchange.replace(
                "ordering", "catalog"), routing_key="catalog.commands")
        # and its own, aimed at catalog's queue, returns through ordering's return exchange, to which
        # only ordering's queues are bound: the message never reaches catalog.commands.
        channel = ordering.channel()
        channel.basic_publish_confirm(amqp.Message(b"aimed at catalog", expiration="1"),
                                      exchange=retry_exchange, routing_key="catalog.commands")
        channel.basic_publish_confirm(amqp.Message(b"ordering's own", expiration="1"),
                                      exchange=retry_exchange, routing_key="ordering.commands")
        wait_for(lambda: channel.queue_declare("ordering.commands", passive=True).message_count == 1,
                 message="ordering's own retry to come back")

    assert publish.value.code == 403 and "access to exchange 'retry.catalog." in str(publish.value)
    with Connection(url) as admin:
        assert admin.channel().queue_declare("catalog.commands", passive=True).message_count == 0
