"""What it takes to bring the broker's topology to what the code declares, and doing it
(``manage.py bus_topology --plan`` and ``--apply``).

``diff`` compares two ``BrokerTopology`` values, the code's (``Topology.declared``) and
the broker's (its adapter's ``TopologyEditor.actual``), and returns a ``Plan``: plain
data, computed without a broker. ``apply`` carries a plan out through the editor.

What it promises: a queue that holds messages is never deleted unless asked
(``delete_unused_with_messages``), and a queue whose arguments changed is redeclared
through a holding queue, each message acked where it was only once the broker has
confirmed its copy: interrupted anywhere, a message is in one queue or in both (the
inbox absorbs the copy), never in neither, and the next ``--apply`` finishes the move.
Only names the platform gives are planned (``Topology.is_own_queue``/``is_own_exchange``):
Celery's own queues and other applications' are left alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar


class TopologyPlanError(Exception):
    """The broker's topology cannot be read or changed (no management API, a broker that
    keeps none): the message says what to do."""


@dataclasses.dataclass(frozen=True, order=True)
class Binding:
    """A queue's binding: messages published to ``exchange`` with ``routing_key`` reach it."""

    exchange: str
    routing_key: str

    def __str__(self) -> str:
        return f"{self.exchange} key={self.routing_key}"


@dataclasses.dataclass(frozen=True)
class ExchangeState:
    name: str
    type: str
    durable: bool = True


@dataclasses.dataclass(frozen=True)
class QueueState:
    """A queue as declared, or as found (then with what it holds and who consumes it)."""

    name: str
    #: None where the broker keeps no queue arguments (Redis): never compared.
    arguments: dict | None = None
    bindings: frozenset[Binding] = frozenset()
    durable: bool = True
    messages: int = 0
    consumers: int = 0


@dataclasses.dataclass(frozen=True)
class BrokerTopology:
    #: None where the broker keeps no exchanges (Redis: kombu's are in each process's
    #: memory, only their bindings are stored): none is then planned.
    exchanges: dict[str, ExchangeState] | None
    queues: dict[str, QueueState]


# The steps of a plan, in the order ``apply`` takes them: what queues need exists before
# they are made, and nothing is deleted before what replaces it is in place.


@dataclasses.dataclass(frozen=True)
class Step:
    action: ClassVar[str]
    order: ClassVar[int]

    def describe(self) -> str:
        raise NotImplementedError

    def as_dict(self) -> dict:
        return {"action": self.action, "description": self.describe(), **_plain(self)}


@dataclasses.dataclass(frozen=True)
class CreateExchange(Step):
    action, order = "create exchange", 0
    exchange: ExchangeState

    def describe(self) -> str:
        return f"{self.exchange.name} ({self.exchange.type})"


@dataclasses.dataclass(frozen=True)
class RedeclareExchange(Step):
    """Deleted and declared again (its type changed); its bindings are made again after it."""

    action, order = "redeclare exchange", 1
    exchange: ExchangeState
    actual: ExchangeState

    def describe(self) -> str:
        return (f"{self.exchange.name}: {self.actual.type}{'' if self.actual.durable else ', transient'} -> "
                f"{self.exchange.type} (deleted and declared again: a message published meanwhile is "
                "returned to its publisher, and the relay sends it again)")


@dataclasses.dataclass(frozen=True)
class CreateQueue(Step):
    action, order = "create queue", 2
    queue: QueueState

    def describe(self) -> str:
        bound = ", ".join(str(b) for b in sorted(self.queue.bindings))
        return f"{self.queue.name}" + (f" <- {bound}" if bound else "")


@dataclasses.dataclass(frozen=True)
class Bind(Step):
    action, order = "bind", 3
    queue: str
    binding: Binding

    def describe(self) -> str:
        return f"{self.queue} <- {self.binding}"


@dataclasses.dataclass(frozen=True)
class Unbind(Step):
    action, order = "unbind", 4
    queue: str
    binding: Binding

    def describe(self) -> str:
        return f"{self.queue} <- {self.binding}"


@dataclasses.dataclass(frozen=True)
class RedeclareQueue(Step):
    """Its arguments changed: drained into a holding queue, declared again, filled back."""

    action, order = "redeclare queue", 5
    queue: QueueState
    actual: QueueState
    #: Messages a holding queue an interrupted ``--apply`` left holds for it (moved back too).
    held: int = 0

    def describe(self) -> str:
        before, after = self.actual.arguments or {}, self.queue.arguments or {}
        changes = [f"{name}: {before.get(name, '(none)')} -> {after.get(name, '(none)')}"
                   for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]
        if self.actual.durable != self.queue.durable:
            changes.append(f"durable: {self.actual.durable} -> {self.queue.durable}")
        text = f"{self.queue.name}: {'; '.join(changes)}; {_holds(self.actual.messages)}, moved through " \
               f"a holding queue and back"
        if self.held:
            text += f" (with the {self.held} an interrupted --apply left in the holding queue)"
        if self.actual.consumers:
            text += f"; REFUSED while {self.actual.consumers} consumer(s) are attached: stop its workers first"
        return text


@dataclasses.dataclass(frozen=True)
class RestoreHeld(Step):
    """A holding queue an interrupted ``--apply`` left: its messages go back to their queue."""

    action, order = "restore held messages", 6
    queue: str
    holding: QueueState

    def describe(self) -> str:
        return f"{self.holding.name} -> {self.queue} ({_holds(self.holding.messages)}, left by an interrupted --apply)"


@dataclasses.dataclass(frozen=True)
class DeleteQueue(Step):
    """A queue of the platform's naming that the code no longer declares (a subscriber removed)."""

    action, order = "delete queue", 7
    queue: QueueState

    def describe(self) -> str:
        text = f"{self.queue.name} (no longer in the code; {_holds(self.queue.messages)}"
        if self.queue.consumers:
            text += f", {self.queue.consumers} consumer(s) attached"
        text += ")"
        if self.queue.messages:
            text += ": kept unless --delete-unused-with-messages"
        return text


@dataclasses.dataclass(frozen=True)
class DeleteExchange(Step):
    action, order = "delete exchange", 8
    name: str

    def describe(self) -> str:
        return f"{self.name} (no longer in the code; kept while a queue is bound to it)"


@dataclasses.dataclass(frozen=True)
class Plan:
    #: Which broker, for people (``Broker.describe``: no password).
    broker: str
    steps: tuple[Step, ...]

    @property
    def in_sync(self) -> bool:
        return not self.steps

    def as_dict(self) -> dict:
        return {"broker": self.broker, "in_sync": self.in_sync, "steps": [step.as_dict() for step in self.steps]}


def diff(
    declared: BrokerTopology,
    actual: BrokerTopology,
    *,
    broker: str,
    held_queue_of: Callable[[str], str | None],
    is_own_queue: Callable[[str], bool],
    is_own_exchange: Callable[[str], bool],
) -> Plan:
    """The steps that bring ``actual`` to ``declared``; nothing of a foreign name is touched."""
    steps: list[Step] = []
    rebuilt_exchanges: set[str] = set()
    if actual.exchanges is not None and declared.exchanges is not None:
        for name, wanted in declared.exchanges.items():
            found = actual.exchanges.get(name)
            if found is None:
                steps.append(CreateExchange(wanted))
            elif (found.type, found.durable) != (wanted.type, wanted.durable):
                steps.append(RedeclareExchange(wanted, found))
                rebuilt_exchanges.add(name)
        steps += [DeleteExchange(name) for name in sorted(actual.exchanges)
                  if name not in declared.exchanges and is_own_exchange(name)]

    holding = {held_queue_of(name): queue for name, queue in actual.queues.items() if held_queue_of(name)}
    for name, wanted in declared.queues.items():
        found = actual.queues.get(name)
        if found is None:
            steps.append(CreateQueue(wanted))
        elif found.durable != wanted.durable or (found.arguments is not None and found.arguments != (wanted.arguments or {})):
            # Its procedure binds the new queue and unbinds the holding queue itself.
            steps.append(RedeclareQueue(wanted, found, held=holding[name].messages if name in holding else 0))
            continue
        else:
            # A redeclared exchange comes back without bindings: its queues are bound again.
            kept = {b for b in found.bindings if b.exchange not in rebuilt_exchanges}
            steps += [Bind(name, b) for b in sorted(wanted.bindings - kept)]
            steps += [Unbind(name, b) for b in sorted(found.bindings - wanted.bindings)]
        if name in holding:
            steps.append(RestoreHeld(name, holding[name]))

    for name, found in sorted(actual.queues.items()):
        held_for = held_queue_of(name)
        if name in declared.queues or (held_for is not None and held_for in declared.queues):
            continue
        if is_own_queue(name):
            steps.append(DeleteQueue(found))
    return Plan(broker, tuple(sorted(steps, key=lambda step: step.order)))


class TopologyEditor:
    """Reads and changes one broker's topology: each adapter has its own
    (``Broker.topology_editor``), ``apply`` decides what to do with it."""

    #: Arguments of a holding queue (``RedeclareQueue``): at least as durable as the queue it holds for.
    holding_arguments: ClassVar[dict | None] = None

    def actual(self) -> BrokerTopology:
        """Every exchange, queue and binding the broker has, with each queue's messages and consumers."""
        raise NotImplementedError

    def declare_exchange(self, exchange: ExchangeState) -> None:
        raise NotImplementedError

    def delete_exchange(self, name: str) -> bool:
        """Delete it unless a queue is still bound to it; whether it was deleted."""
        raise NotImplementedError

    def redeclare_exchange(self, exchange: ExchangeState) -> None:
        """Delete it, bindings and all, and declare it as ``exchange`` says."""
        raise NotImplementedError

    def declare_queue(self, queue: QueueState) -> None:
        """Declare it (idempotent) with its arguments and bindings."""
        raise NotImplementedError

    def bind(self, queue: str, binding: Binding) -> None:
        raise NotImplementedError

    def unbind(self, queue: str, binding: Binding) -> None:
        raise NotImplementedError

    def counts(self, queue: str) -> tuple[int, int]:
        """(messages, consumers) of the queue now."""
        raise NotImplementedError

    def delete_queue(self, queue: str) -> None:
        """Delete it with whatever it holds (the caller has decided)."""
        raise NotImplementedError

    def move(self, source: str, destination: str) -> int:
        """Move every message ``source`` holds into ``destination``, each acked from ``source``
        only once the broker confirmed its copy; how many moved."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Outcome:
    step: Step
    done: bool
    note: str = ""


def apply(plan: Plan, editor: TopologyEditor, *, holding_name: Callable[[str], str],
          delete_unused_with_messages: bool = False,
          arriving_by_name: Callable[[str], str | None] = lambda queue: None) -> list[Outcome]:
    """Carry out ``plan`` in its order; a step refused (consumers attached, messages in an
    unused queue) is reported and the others still run. Each step checks the broker again:
    the plan may be minutes old.

    ``arriving_by_name(queue)`` says what may still be routed to the queue by its name rather
    than through a binding (a retry waiting to come back, a copy for that context alone), or
    None: a queue is never deleted, to be declared again or not, while something is, since
    the broker drops a message routed by name to a queue that is not there.
    """
    outcomes = []
    for step in plan.steps:
        if isinstance(step, CreateExchange):
            editor.declare_exchange(step.exchange)
        elif isinstance(step, RedeclareExchange):
            editor.redeclare_exchange(step.exchange)
        elif isinstance(step, CreateQueue):
            editor.declare_queue(step.queue)
        elif isinstance(step, Bind):
            editor.bind(step.queue, step.binding)
        elif isinstance(step, Unbind):
            editor.unbind(step.queue, step.binding)
        elif isinstance(step, RedeclareQueue):
            outcomes.append(_arriving_refusal(step, step.queue.name, arriving_by_name)
                            or _redeclare_queue(step, editor, holding_name(step.queue.name)))
            continue
        elif isinstance(step, RestoreHeld):
            moved = _restore(editor, step.queue, step.holding)
            outcomes.append(Outcome(step, True, f"{moved} message(s) moved back"))
            continue
        elif isinstance(step, DeleteQueue):
            outcomes.append(_arriving_refusal(step, step.queue.name, arriving_by_name)
                            or _delete_unused_queue(step, editor, delete_unused_with_messages))
            continue
        elif isinstance(step, DeleteExchange):
            deleted = editor.delete_exchange(step.name)
            outcomes.append(Outcome(step, deleted, "" if deleted else "kept: a queue is still bound to it"))
            continue
        outcomes.append(Outcome(step, True))
    return outcomes


def _arriving_refusal(step: Step, queue: str, arriving_by_name: Callable[[str], str | None]) -> Outcome | None:
    arriving = arriving_by_name(queue)
    return Outcome(step, False, f"refused: {arriving}, and the broker drops what is routed by name to a "
                                "queue that is not there; --apply again once they have arrived") if arriving else None


def _redeclare_queue(step: RedeclareQueue, editor: TopologyEditor, holding: str) -> Outcome:
    name = step.queue.name
    _, consumers = editor.counts(name)
    if consumers:
        return Outcome(step, False, f"refused: {consumers} consumer(s) attached to {name}; stop the workers that "
                                    "consume it (and wait BUS_RETRY_BACKOFF_MAX for their retries to come back), "
                                    "then --apply again")
    # The holding queue takes the queue's bindings before the queue loses them, so a message
    # published meanwhile reaches one or both (the inbox absorbs a copy), never neither.
    editor.declare_queue(QueueState(holding, editor.holding_arguments, step.actual.bindings))
    for binding in sorted(step.actual.bindings):
        editor.unbind(name, binding)
    moved_out = _empty_and_delete(editor, name, into=holding)
    editor.declare_queue(QueueState(name, step.queue.arguments, frozenset(), step.queue.durable))
    # Back first, then bound: what it held comes before what is published from now on.
    moved_back = editor.move(holding, name)
    moved_back += _restore(editor, name, QueueState(holding, editor.holding_arguments, step.actual.bindings),
                           step.queue.bindings)
    return Outcome(step, True, f"{moved_out} message(s) moved out, {moved_back} back")


def _restore(editor: TopologyEditor, queue: str, holding: QueueState, bindings: frozenset[Binding] = frozenset()) -> int:
    """Bind ``queue``, unbind the holding queue, move what it holds back and delete it."""
    for binding in sorted(bindings):
        editor.bind(queue, binding)
    for binding in sorted(holding.bindings):
        editor.unbind(holding.name, binding)
    return _empty_and_delete(editor, holding.name, into=queue)


def _empty_and_delete(editor: TopologyEditor, source: str, *, into: str) -> int:
    """Move everything out of ``source`` (unbound: only a retry expiring back by name can
    still arrive), then delete it once empty.

    Its consumers are not counted again here: RabbitMQ counts the mover's own takes of a
    quorum queue as consumers for a second or so after. Workers were checked for before.
    """
    moved = 0
    while True:
        moved += editor.move(source, into)
        messages, _ = editor.counts(source)
        if not messages:
            editor.delete_queue(source)
            return moved


def _delete_unused_queue(step: DeleteQueue, editor: TopologyEditor, with_messages: bool) -> Outcome:
    name = step.queue.name
    messages, consumers = editor.counts(name)
    if consumers:
        return Outcome(step, False, f"kept: {consumers} consumer(s) attached (a worker of older code?)")
    if messages and not with_messages:
        return Outcome(step, False, f"kept: {_holds(messages)}; --delete-unused-with-messages deletes it anyway")
    for binding in sorted(step.queue.bindings):
        editor.unbind(name, binding)
    messages, _ = editor.counts(name)  # what arrived before the unbinding
    if messages and not with_messages:
        return Outcome(step, False, f"kept, unbound: {_holds(messages)}; "
                                    "--delete-unused-with-messages deletes it anyway")
    editor.delete_queue(name)
    return Outcome(step, True, f"deleted with {messages} message(s)" if messages else "")


def _holds(messages: int) -> str:
    return f"holds {messages} message{'' if messages == 1 else 's'}"


def _plain(value):
    """Dataclasses as dicts and frozensets as sorted lists, for JSON."""
    if dataclasses.is_dataclass(value):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, frozenset | set):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
