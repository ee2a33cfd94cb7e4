"""The broker permissions derived per role let each role reach its own names and no one else's.

RabbitMQ searches a name with a permission's pattern (unanchored), so these tests do too
(``re.search``): a pattern that forgot its anchors would match another context's names here
as it would on the broker. The names come from ``Topology`` on RabbitMQ.
"""

import re

import pytest
from amqp.exceptions import AccessRefused, NotFound
from django.core.management import call_command

from messaging import broker_permissions, brokers
from messaging.registry import registry
from messaging.topology import Topology, TopologyMissingError

CONTEXTS = registry.contexts()


@pytest.fixture
def topology():
    return Topology(broker=brokers.for_url("amqp://guest:guest@localhost:5672/bus"))


def _allows(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


def _queues(topology, context: str) -> list[str]:
    return [queue.name for queue in topology.context_queues(context)]


def _permissions(topology, role: str) -> broker_permissions.RolePermissions:
    return next(p for p in broker_permissions.derive(topology) if p.role == role)


def test_there_is_one_role_for_the_relay_and_one_per_context_with_handlers(topology):
    assert [p.role for p in broker_permissions.derive(topology)] == ["relay", *CONTEXTS]
    assert {"catalog", "basket", "ordering", "payment"} <= set(CONTEXTS)


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_context_reads_each_of_its_own_queues_and_none_of_another_contexts(topology, context):
    read = _permissions(topology, context).read

    assert all(_allows(read, name) for name in _queues(topology, context))
    others = [name for other in CONTEXTS if other != context for name in _queues(topology, other)]
    assert others and not any(_allows(read, name) for name in others)
    assert not _allows(read, "dead-letters")


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_context_publishes_to_its_retry_route_and_to_no_command_or_event_exchange(topology, context):
    write = _permissions(topology, context).write
    retry = topology.retry_route(_queues(topology, context)[0], 0).route.exchange

    assert _allows(write, retry.name)
    # Every step of its retry schedule, which names the retry exchanges the broker has,
    retry_exchanges = [e.name for e in topology.exchanges() if e.name.startswith(f"retry.{context}.")]
    assert retry_exchanges and all(_allows(write, name) for name in retry_exchanges)
    # and no other context's: an expired retry returns through its context's exchange, bound
    # to that context's queues alone, so through another's it could reach another's queues.
    others = [e.name for e in topology.exchanges() if e.name.startswith("retr") and
              not e.name.startswith((f"retry.{context}.", f"retried.{context}"))]
    assert others and not any(_allows(write, name) for name in others)
    assert not any(_allows(write, exchange.name) for exchange in topology.exchanges()
                   if exchange.name == "commands" or exchange.name.startswith("events."))
    assert not _allows(write, broker_permissions.DEFAULT_EXCHANGE_RESOURCE)


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_context_may_declare_none_of_the_buss_exchanges_and_queues(topology, context):
    configure = _permissions(topology, context).configure

    names = [e.name for e in topology.exchanges()] + [q.name for q in topology.queues()]
    assert not any(_allows(configure, name) for name in names)


def test_ordering_may_neither_read_catalogs_commands_nor_publish_catalogs_events(topology):
    ordering = _permissions(topology, "ordering")

    assert not _allows(ordering.read, "catalog.commands")
    assert not _allows(ordering.write, "events.catalog.ProductPriceChanged")


def test_a_workers_remote_control_queue_is_its_own_contexts_alone(topology):
    ordering = _permissions(topology, "ordering")

    assert _allows(ordering.read, "ordering.4242@host.example.celery.pidbox")
    assert not _allows(ordering.read, "catalog.4242@host.example.celery.pidbox")
    assert not _allows(ordering.configure, "catalog.4242@host.example.celery.pidbox")


def test_the_relay_publishes_to_every_command_and_event_exchange_and_reads_only_the_dead_letters(topology):
    relay = _permissions(topology, "relay")

    assert all(_allows(relay.write, exchange.name) for exchange in topology.exchanges()
               if exchange.name == "commands" or exchange.name.startswith("events."))
    assert _allows(relay.write, broker_permissions.DEFAULT_EXCHANGE_RESOURCE)  # a dead letter's redelivery
    assert [name for name in (q.name for q in topology.queues()) if _allows(relay.read, name)] == ["dead-letters"]
    assert not any(_allows(relay.configure, q.name) for q in topology.queues())


def test_every_pattern_is_anchored_at_both_ends(topology):
    for role in broker_permissions.derive(topology):
        for pattern in (role.configure, role.write, role.read):
            assert pattern.startswith("^") and pattern.endswith("$"), (role.role, pattern)


def test_the_command_prints_rabbitmqctl_lines_with_a_placeholder_for_each_password(settings, capsys):
    settings.CELERY_BROKER_URL = "amqp://admin:s3cret@broker:5672/shop"

    call_command("bus_permissions", "--user-prefix", "shop-")

    out = capsys.readouterr().out
    assert "rabbitmqctl add_user shop-ordering '<password of shop-ordering>'" in out
    assert "rabbitmqctl set_permissions -p shop shop-relay '^(celeryev)$' " in out
    assert "s3cret" not in out


def test_a_role_url_keeps_every_host_and_encodes_the_password():
    url = broker_permissions.role_url("amqp://a:b@h1:5672/x;amqp://a:b@h2:5672/x",
                                      user="bus-ordering", password="p/@$", vhost="shop")

    assert url == "amqp://bus-ordering:p%2F%40%24@h1:5672/shop;amqp://bus-ordering:p%2F%40%24@h2:5672/shop"


class _Channel:
    """A channel of a broker user that may declare nothing; ``existing`` names what the broker has."""

    def __init__(self, existing: set[str]) -> None:
        self.existing, self.is_open = existing, True

    def exchange_declare(self, exchange, type, passive=False, **options):
        self._declare(exchange, passive)

    def queue_declare(self, queue, passive=False, **options):
        self._declare(queue, passive)

    def _declare(self, name, passive):
        if not passive:
            self.is_open = False
            raise AccessRefused(f"ACCESS_REFUSED - configure access to '{name}' refused")
        if name not in self.existing:
            self.is_open = False
            raise NotFound(f"NOT_FOUND - no '{name}'")

    def close(self):
        self.is_open = False


class _Connection:
    def __init__(self, existing: set[str]) -> None:
        self.existing = existing

    def channel(self):
        return _Channel(self.existing)


def _names(topology) -> set[str]:
    return {e.name for e in topology.exchanges()} | {q.name for q in topology.queues()}


def test_a_process_that_may_not_declare_finds_the_topology_declared(topology):
    assert topology.declare_where_allowed(_Connection(_names(topology))) is False


def test_a_process_that_may_not_declare_names_what_is_missing(topology):
    missing = sorted(_names(topology))[:2]

    with pytest.raises(TopologyMissingError) as error:
        topology.declare_where_allowed(_Connection(_names(topology) - set(missing)))

    assert "2 of its exchanges and queues are missing" in str(error.value)
    assert all(name in str(error.value) for name in missing)
    assert "bus_topology --apply" in str(error.value)
