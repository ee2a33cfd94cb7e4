import json
import sys

from django.core.management.base import BaseCommand, CommandError

from messaging import brokers
from messaging.models import OutboxMessage
from messaging.topology import Topology, context_of_queue, holding_queue_name
from messaging.topology_plan import Outcome, Plan, TopologyPlanError, apply

#: Exit status of ``--plan`` (and of ``--apply``) when the broker still differs from the code:
#: distinct from 1 (an error) and 2 (bad options), for deploy scripts and CI.
CHANGES_PENDING = 3


class Command(BaseCommand):
    help = (
        "Show the exchanges, queues, bindings and handlers derived from the code. With --plan, compare "
        "them with the broker's and list what --apply would change (exit 3 while anything differs)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["text", "json"], default="text")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--plan", action="store_true",
                          help="list what differs between the broker and the code; exit 3 if anything does")
        mode.add_argument("--apply", action="store_true",
                          help="make what is safe of the plan: create, bind and unbind, redeclare a queue whose "
                               "arguments changed (its workers stopped), delete unused queues that are empty")
        parser.add_argument("--delete-unused-with-messages", action="store_true",
                            help="with --apply: delete a queue the code no longer declares even if it holds "
                                 "messages (they are lost)")

    def handle(self, *args, **options):
        if options["delete_unused_with_messages"] and not options["apply"]:
            raise CommandError("--delete-unused-with-messages goes with --apply")
        if not (options["plan"] or options["apply"]):
            self._show_declared(options["format"])
            return
        broker = brokers.current()
        topology = Topology(broker=broker)
        try:
            with broker.connection() as connection:
                editor = broker.topology_editor(connection)
                plan = topology.plan(editor.actual())
                outcomes = None
                if options["apply"]:
                    outcomes = apply(plan, editor, holding_name=holding_queue_name,
                                     delete_unused_with_messages=options["delete_unused_with_messages"],
                                     arriving_by_name=_arriving_by_name(broker, editor))
                    plan = topology.plan(editor.actual())
        except TopologyPlanError as exc:
            raise CommandError(str(exc)) from exc
        if options["format"] == "json":
            report = plan.as_dict() if outcomes is None else {
                "applied": [{**o.step.as_dict(), "done": o.done, "note": o.note} for o in outcomes],
                "remaining": plan.as_dict(),
            }
            self.stdout.write(json.dumps(report, indent=2))
        else:
            if outcomes is not None:
                self._show_outcomes(outcomes)
            self._show_plan(plan, applied=outcomes is not None)
        if not plan.in_sync:
            sys.exit(CHANGES_PENDING)

    def _show_outcomes(self, outcomes: list[Outcome]) -> None:
        self.stdout.write("Applied" if outcomes else "Applied: nothing to do")
        for outcome in outcomes:
            state = "done" if outcome.done else "NOT DONE"
            note = f": {outcome.note}" if outcome.note else ""
            self.stdout.write(f"  {state:8}  {outcome.step.action:22} {outcome.step.describe()}{note}")

    def _show_plan(self, plan: Plan, *, applied: bool) -> None:
        if plan.in_sync:
            self.stdout.write(f"In sync: {plan.broker} has what the code declares.")
            return
        self.stdout.write(f"{'Still pending' if applied else 'Plan'} for {plan.broker}:")
        for step in plan.steps:
            self.stdout.write(f"  {step.action:22} {step.describe()}")
        self.stdout.write(f"{len(plan.steps)} change(s) pending (exit status {CHANGES_PENDING})"
                          + ("." if applied else "; `manage.py bus_topology --apply` makes what is safe of them."))

    def _show_declared(self, output_format: str) -> None:
        topology = Topology().describe()
        if output_format == "json":
            self.stdout.write(json.dumps(topology, indent=2))
            return
        self.stdout.write("Exchanges")
        for exchange in topology["exchanges"]:
            self.stdout.write(f"  {exchange['name']}  ({exchange['type']})")
        self.stdout.write("Queues")
        for queue in topology["queues"]:
            self.stdout.write(f"  {queue['name']}")
            for bound in queue["bindings"]:
                self.stdout.write(f"    <- {bound['exchange']}  key={bound['routing_key']}")
        self.stdout.write("Contexts")
        for context, about in topology["contexts"].items():
            self.stdout.write(f"  {context}: consumes {', '.join(about['queues'])}")
            for handler in about["handlers"]:
                self.stdout.write(f"    {handler['kind']:7} {handler['message_type']:35} -> {handler['handler']}")


def _arriving_by_name(broker, editor):
    """What may still reach a queue by its name, not through a binding: retries waiting in
    the broker's retry queues (any of them may return to it), and copies the outbox holds for
    its context alone (a dead letter's retry, a catch-up), which the relay sends by name."""
    retry_queues = [name for name in editor.actual().queues if broker.returns_by_name(name)]

    def arriving(queue: str) -> str | None:
        retrying = sum(editor.counts(name)[0] for name in retry_queues)
        if retrying:
            return f"{retrying} retr{'y waits' if retrying == 1 else 'ies wait'} in the retry queues to come back by name"
        context = context_of_queue(queue)
        copies = OutboxMessage.objects.filter(published_at__isnull=True, redeliver_to=context).count()
        if copies:
            return (f"the outbox holds {copies} message(s) for {context} alone (a dead letter's retry, a catch-up) "
                    "the relay has not published")
        return None

    return arriving
