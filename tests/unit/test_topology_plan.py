"""The topology plan: what ``bus_topology --plan`` finds between the broker and the code, computed
on plain data, and what ``--apply`` does with it, against an in-memory broker."""

import uuid
from io import StringIO
from typing import ClassVar

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from apps.payment.messages import RefundPayment
from messaging import brokers
from messaging.management.commands.bus_topology import _arriving_by_name
from messaging.outbox import redeliver
from messaging.topology import Topology, held_queue_of, holding_queue_name
from messaging.topology_plan import (
    Bind,
    Binding,
    BrokerTopology,
    CreateExchange,
    CreateQueue,
    DeleteExchange,
    DeleteQueue,
    ExchangeState,
    QueueState,
    RedeclareExchange,
    RedeclareQueue,
    RestoreHeld,
    TopologyEditor,
    Unbind,
    apply,
    diff,
)
from tests.brokers import on_broker
from tests.senders import send

PRICE = Binding("events.catalog.ProductPriceChanged", "catalog.ProductPriceChanged")
LIMIT_5 = {"x-queue-type": "quorum", "x-delivery-limit": 5}
LIMIT_7 = {"x-queue-type": "quorum", "x-delivery-limit": 7}


def _queue(name, arguments=LIMIT_5, bindings=(PRICE,), messages=0, consumers=0):
    return QueueState(name, arguments, frozenset(bindings), messages=messages, consumers=consumers)


def _topology(*queues, exchanges=("events.catalog.ProductPriceChanged",)):
    return BrokerTopology(exchanges={name: ExchangeState(name, "fanout") for name in exchanges},
                          queues={queue.name: queue for queue in queues})


def _plan(declared, actual):
    return diff(declared, actual, broker="test broker", held_queue_of=held_queue_of,
                is_own_queue=lambda name: not name.startswith("celery"),
                is_own_exchange=lambda name: name.startswith("events."))


def test_a_broker_with_what_the_code_declares_needs_no_step():
    topology = _topology(_queue("basket.events.catalog.ProductPriceChanged"))

    assert _plan(topology, topology).in_sync


def test_a_missing_exchange_and_queue_are_created_with_the_queues_bindings():
    queue = _queue("basket.events.catalog.ProductPriceChanged")

    plan = _plan(_topology(queue), _topology(exchanges=()))

    assert plan.steps == (CreateExchange(ExchangeState("events.catalog.ProductPriceChanged", "fanout")),
                          CreateQueue(queue))


def test_a_binding_the_code_added_is_bound_and_one_it_removed_is_unbound():
    old = Binding("commands", "payment.Old")
    new = Binding("commands", "payment.New")
    kept = Binding("commands", "payment.Kept")

    plan = _plan(_topology(_queue("payment.commands", bindings=(kept, new))),
                 _topology(_queue("payment.commands", bindings=(kept, old))))

    assert plan.steps == (Bind("payment.commands", new), Unbind("payment.commands", old))


def test_a_changed_queue_argument_is_a_redeclare_naming_what_the_queue_holds():
    wanted = _queue("payment.commands", LIMIT_7)
    found = _queue("payment.commands", LIMIT_5, messages=12)

    plan = _plan(_topology(wanted), _topology(found))

    assert plan.steps == (RedeclareQueue(wanted, found),)
    assert "x-delivery-limit: 5 -> 7; holds 12 messages" in plan.steps[0].describe()


def test_an_exchange_whose_type_changed_is_redeclared_and_its_queues_bound_again():
    queue = _queue("basket.events.catalog.ProductPriceChanged")
    actual = BrokerTopology(exchanges={PRICE.exchange: ExchangeState(PRICE.exchange, "direct")},
                            queues={queue.name: queue})

    plan = _plan(_topology(queue), actual)

    assert plan.steps == (RedeclareExchange(ExchangeState(PRICE.exchange, "fanout"),
                                            ExchangeState(PRICE.exchange, "direct")),
                          Bind(queue.name, PRICE))


def test_a_removed_subscribers_queue_is_planned_for_deletion_naming_its_messages():
    gone = _queue("shipping.events.catalog.ProductPriceChanged", messages=3)

    plan = _plan(_topology(), _topology(gone))

    assert plan.steps == (DeleteQueue(gone),)
    assert "holds 3 messages): kept unless --delete-unused-with-messages" in plan.steps[0].describe()


def test_an_exchange_of_an_event_no_longer_in_the_code_is_planned_for_deletion():
    plan = _plan(_topology(exchanges=()), _topology(exchanges=("events.catalog.Gone",)))

    assert plan.steps == (DeleteExchange("events.catalog.Gone"),)


def test_queues_and_exchanges_not_named_by_the_platform_are_left_alone():
    actual = _topology(_queue("celery.pidbox", None, ()), exchanges=("celeryev", "celery.pidbox"))

    assert _plan(_topology(exchanges=()), actual).in_sync


def test_a_holding_queue_left_by_an_interrupted_apply_is_moved_back():
    queue = _queue("payment.commands")
    holding = _queue(holding_queue_name("payment.commands"), {"x-queue-type": "quorum"}, (), messages=4)

    plan = _plan(_topology(queue), _topology(queue, holding))

    assert plan.steps == (RestoreHeld("payment.commands", holding),)


def test_a_broker_that_keeps_no_exchanges_or_arguments_is_compared_on_queues_and_bindings_only():
    declared = _topology(_queue("basket.events.catalog.ProductPriceChanged"))
    actual = BrokerTopology(exchanges=None, queues={
        "basket.events.catalog.ProductPriceChanged": _queue("basket.events.catalog.ProductPriceChanged", None)})

    assert _plan(declared, actual).in_sync


def test_the_platforms_names_are_told_from_celerys_and_other_applications():
    topology = Topology(broker=brokers.for_url("amqp://guest:guest@localhost:5672//"))

    assert all(topology.is_own_queue(name) for name in (
        "basket.commands", "basket.events.catalog.ProductPriceChanged", "dead-letters", "retry.basket.1000ms",
        # Before, every context's retries waited in shared classic queues: the plan deletes them once drained.
        "retry.1000ms", "topology-holding.basket.commands"))
    assert not any(topology.is_own_queue(name) for name in (
        "celery.pidbox", "celeryev.3f1c", "celery@host.celery.pidbox", "3f1c.reply.celery.pidbox", "invoices"))
    assert all(topology.is_own_exchange(name) for name in ("commands", "events.catalog.Gone", "retry.basket.20ms",
                                                              "retried.basket", "retry.20ms"))
    assert not any(topology.is_own_exchange(name) for name in ("celeryev", "celery.pidbox", "amq.direct"))


class InMemoryBroker(TopologyEditor):
    """Queues as lists of messages; each step recorded."""

    holding_arguments: ClassVar[dict] = {"x-queue-type": "quorum"}

    def __init__(self, *queues: QueueState, consumers: dict | None = None) -> None:
        self.queues = {q.name: QueueState(q.name, q.arguments, q.bindings) for q in queues}
        self.messages = {q.name: [f"{q.name}-{n}" for n in range(q.messages)] for q in queues}
        self.consumers = consumers or {}

    def declare_queue(self, queue):
        if queue.name not in self.queues:
            self.queues[queue.name] = QueueState(queue.name, queue.arguments, frozenset())
            self.messages[queue.name] = []
        for binding in queue.bindings:
            self.bind(queue.name, binding)

    def bind(self, queue, binding):
        self.queues[queue] = QueueState(queue, self.queues[queue].arguments, self.queues[queue].bindings | {binding})

    def unbind(self, queue, binding):
        self.queues[queue] = QueueState(queue, self.queues[queue].arguments, self.queues[queue].bindings - {binding})

    def counts(self, queue):
        return len(self.messages.get(queue, [])), self.consumers.get(queue, 0)

    def delete_queue(self, queue):
        del self.queues[queue], self.messages[queue]

    def move(self, source, destination):
        moved = self.messages[source]
        self.messages[destination] += moved
        self.messages[source] = []
        return len(moved)


def _apply(broker, declared, **options):
    actual = BrokerTopology(exchanges=None, queues={
        name: QueueState(name, q.arguments, q.bindings, messages=len(broker.messages[name]),
                         consumers=broker.consumers.get(name, 0)) for name, q in broker.queues.items()})
    return apply(_plan(declared, actual), broker, holding_name=holding_queue_name, **options)


def test_apply_redeclares_a_queue_with_its_new_arguments_and_bindings_keeping_every_message_in_order():
    broker = InMemoryBroker(_queue("payment.commands", LIMIT_5, messages=3))

    [outcome] = _apply(broker, _topology(_queue("payment.commands", LIMIT_7)))

    assert outcome.done, outcome.note
    assert broker.queues == {"payment.commands": QueueState("payment.commands", LIMIT_7, frozenset({PRICE}))}
    assert broker.messages["payment.commands"] == ["payment.commands-0", "payment.commands-1", "payment.commands-2"]


def test_apply_refuses_to_redeclare_a_queue_while_a_worker_consumes_it():
    broker = InMemoryBroker(_queue("payment.commands", LIMIT_5, messages=3), consumers={"payment.commands": 2})

    [outcome] = _apply(broker, _topology(_queue("payment.commands", LIMIT_7)))

    assert not outcome.done and "2 consumer(s) attached to payment.commands" in outcome.note
    assert broker.queues["payment.commands"].arguments == LIMIT_5 and len(broker.messages["payment.commands"]) == 3


def test_apply_moves_back_what_an_interrupted_apply_left_in_a_holding_queue():
    holding = holding_queue_name("payment.commands")
    broker = InMemoryBroker(_queue("payment.commands", messages=1),
                            _queue(holding, {"x-queue-type": "quorum"}, (PRICE,), messages=2))

    [outcome] = _apply(broker, _topology(_queue("payment.commands")))

    assert outcome.done
    assert set(broker.queues) == {"payment.commands"}
    assert broker.messages["payment.commands"] == ["payment.commands-0", f"{holding}-0", f"{holding}-1"]


def test_apply_keeps_an_unused_queue_that_holds_messages_unless_told():
    broker = InMemoryBroker(_queue("shipping.events.catalog.ProductPriceChanged", messages=2))

    [kept] = _apply(broker, _topology())
    assert not kept.done and "holds 2 messages" in kept.note
    assert "shipping.events.catalog.ProductPriceChanged" in broker.queues

    [deleted] = _apply(broker, _topology(), delete_unused_with_messages=True)
    assert deleted.done and broker.queues == {}


def test_apply_deletes_an_unused_empty_queue():
    broker = InMemoryBroker(_queue("shipping.events.catalog.ProductPriceChanged"))

    [outcome] = _apply(broker, _topology())

    assert outcome.done and broker.queues == {}


def test_plan_on_the_embedded_broker_says_it_is_not_supported(settings):
    on_broker(settings, "embedded")  # CI runs the unit tests with RabbitMQ's URL set
    with pytest.raises(CommandError, match="not supported on the embedded filesystem broker"):
        call_command("bus_topology", "--plan", stdout=StringIO())


def test_delete_unused_with_messages_is_refused_without_apply():
    with pytest.raises(CommandError, match="goes with --apply"):
        call_command("bus_topology", "--plan", "--delete-unused-with-messages", stdout=StringIO())


@pytest.mark.parametrize("step", ["redeclare", "delete"])
def test_apply_touches_no_queue_something_may_still_reach_by_its_name(step):
    # A retry expiring back to a queue, or a copy for its context alone, is routed by the
    # queue's name: the broker drops it if the queue is gone at that moment.
    name = "payment.commands" if step == "redeclare" else "shipping.events.catalog.ProductPriceChanged"
    broker = InMemoryBroker(_queue(name, LIMIT_5, messages=3))
    declared = _topology(_queue(name, LIMIT_7)) if step == "redeclare" else _topology()

    [outcome] = _apply(broker, declared, delete_unused_with_messages=True,
                       arriving_by_name=lambda queue: "1 retry waits in the retry queues" if queue == name else None)

    assert not outcome.done and outcome.note.startswith("refused: 1 retry waits in the retry queues")
    assert broker.queues[name].arguments == LIMIT_5 and len(broker.messages[name]) == 3


@pytest.mark.django_db
def test_the_command_counts_retries_and_copies_for_the_context_alone_as_arriving_by_name(settings):
    on_broker(settings, "rabbitmq")
    broker = InMemoryBroker(_queue("retry.2000ms", {}, (), messages=2), _queue("payment.commands"))
    broker.actual = lambda: BrokerTopology(exchanges=None, queues=dict(broker.queues))
    arriving = _arriving_by_name(brokers.current(), broker)
    assert arriving("payment.commands") == "2 retries wait in the retry queues to come back by name"

    broker.messages["retry.2000ms"] = []
    assert arriving("payment.commands") is None
    envelope = send(RefundPayment(order_id=uuid.uuid4()))
    redeliver(envelope, context="payment")
    assert "the outbox holds 1 message(s) for payment alone" in arriving("payment.commands")
    assert arriving("basket.events.catalog.ProductPriceChanged") is None
